//! Short training runs of the three stages on a tiny synthetic element set:
//! the training loss falls and the test AUC ends above chance; each
//! stage writes its model, metrics and history.

mod support;

use std::path::Path;

use pipeline_models::checkpoint::read_tensors;
use pipeline_models::recipes::{BaselineParams, Stage1Params, Stage2Params};
use pipeline_models::stage_run::{parse_params, run_baseline, run_stage1, run_stage2};
use pipeline_models::synthetic::{write_elements, SyntheticSpec};
use pipeline_models::train::TrainState;
use serde_json::json;
use support::{paths, tiny_audio};

/// Torch's random generator is global to the process and the harness runs
/// tests in parallel threads: one training drawing from it while another
/// trains would make both depend on the timing. They take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn elements(dir: &Path) {
    write_elements(
        dir,
        &SyntheticSpec {
            identities: 10,
            val_identities: 3,
            test_identities: 2,
            categories: pipeline_models::category::ALL.to_vec(),
            clips_each: 2,
            frame_size: 32,
            clips_per_shard: 20,
            seed: 7,
        },
    )
    .unwrap();
}

fn recipe(epochs: usize, lr: f64, batch: usize) -> serde_json::Value {
    json!({
        "epochs": epochs, "lr": lr, "batch_size": batch, "seed": 3, "workers": 2,
        "schedule": {"kind": "warmup_cosine", "warmup": 1, "final_factor": 0.1}
    })
}

/// The loss of the last epoch is below the first's, and the AUC of `score`
/// in the final report is above chance.
fn check(state: &TrainState, out: &Path, score: &str) {
    let first = state.history.first().unwrap().train_loss;
    let last = state.history.last().unwrap().train_loss;
    assert!(
        last < first,
        "training loss did not fall: {first} -> {last}"
    );
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let auc = metrics["test"]["overall"][score]["auc"].as_f64().unwrap();
    eprintln!("loss {first:.4} -> {last:.4}, validation AUC of {score}: {auc:.3}");
    assert!(auc > 0.6, "validation AUC {auc} is not above chance");
    assert!(out.join("model.safetensors").is_file());
    let history = std::fs::read_to_string(out.join("history.jsonl")).unwrap();
    assert_eq!(history.lines().count(), state.history.len());
}

#[test]
fn stage1_then_stage2_learn() {
    let _turn = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("elements");
    elements(&root);
    let s1_out = tmp.path().join("s1");
    let p1: Stage1Params = parse_params(
        "stage1",
        &json!({"model": tiny_audio(), "recipe": recipe(6, 1e-3, 4)}),
    )
    .unwrap();
    let work1 = tmp.path().join("w1");
    let st1 = run_stage1(&p1, &paths(&root, None, &s1_out, &work1)).unwrap();
    check(&st1, &s1_out, "audio");

    let s2_out = tmp.path().join("s2");
    let p2: Stage2Params = parse_params(
        "stage2",
        &json!({
            "model": {
                "audio": tiny_audio(),
                "visual_backbone": {"img_size": 32, "embed_dim": 32, "depth": 1, "num_heads": 2},
                "a2v_nhead": 2, "a2v_layers": 1, "predictor_dim_feedforward": 64
            },
            "recipe": recipe(6, 1e-3, 8),
            "backbone_lr_scale": 0.1
        }),
    )
    .unwrap();
    let work2 = tmp.path().join("w2");
    let st2 = run_stage2(&p2, &paths(&root, Some(&s1_out), &s2_out, &work2)).unwrap();
    check(&st2, &s2_out, "final");

    // Stage 2 carries stage 1's encoder and aux_head (as audio_head), frozen
    // through training: bit-identical to stage 1's output.
    let s1 = read_tensors(&s1_out.join("model.safetensors")).unwrap();
    let s2 = read_tensors(&s2_out.join("model.safetensors")).unwrap();
    let mut carried = 0;
    for (name, t) in &s2 {
        let from = if let Some(rest) = name.strip_prefix("audio_head.") {
            format!("aux_head.{rest}")
        } else if name.starts_with("audio_enc.") {
            name.clone()
        } else {
            continue;
        };
        assert!(t.equal(&s1[&from]), "{name} is not stage 1's {from}");
        carried += 1;
    }
    assert!(carried > 10, "only {carried} tensors carried over");
}

#[test]
fn baseline_learns() {
    let _turn = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("elements");
    elements(&root);
    let out = tmp.path().join("out");
    let p: BaselineParams = parse_params(
        "baseline",
        &json!({
            "model": {"img_size": 32, "encoder_embed_dim": 16, "encoder_depth": 1,
                      "encoder_num_heads": 2, "hidden_dim": 64, "head_dropout": 0.1},
            "recipe": {"epochs": 6, "lr": 1e-4, "batch_size": 8, "seed": 3, "clip_norm": null,
                       "schedule": {"kind": "step_decay", "from_epoch": 4, "gamma": 0.5}},
            "head_lr_scale": 10.0
        }),
    )
    .unwrap();
    let work = tmp.path().join("w");
    let st = run_baseline(&p, &paths(&root, None, &out, &work)).unwrap();
    check(&st, &out, "final");
}
