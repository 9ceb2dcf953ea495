//! Stage 2's fusion refit (`fusion_refit`): after the joint training, the
//! gate alone is fitted again on the elements' `fusion` split. Pinned here:
//! only `conf_net` changes, the held-out clips are read by no other training,
//! the step says what it did, and without a fusion split it refuses with the
//! parameter to set. Also: every trained stage writes its per-clip scores.

mod support;

use std::path::Path;

use pipeline_models::checkpoint::read_tensors;
use pipeline_models::data::{ElementSet, Split};
use pipeline_models::recipes::{Stage1Params, Stage2Params};
use pipeline_models::stage_run::{parse_params, run_stage1, run_stage2};
use pipeline_models::synthetic::{write_elements, SyntheticSpec};
use serde_json::json;
use support::{paths, tiny_audio};

/// Identities of the training part that move to the fusion split.
const FUSION_IDS: [&str; 2] = ["id00005", "id00006"];

fn elements(dir: &Path, with_fusion: bool) {
    write_elements(
        dir,
        &SyntheticSpec {
            identities: 10,
            val_identities: 3,
            test_identities: 2,
            categories: pipeline_models::category::ALL.to_vec(),
            clips_each: 1,
            frame_size: 32,
            clips_per_shard: 20,
            seed: 5,
        },
    )
    .unwrap();
    if with_fusion {
        let path = dir.join("manifest.jsonl");
        let text = std::fs::read_to_string(&path).unwrap();
        let moved: String = text
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                if FUSION_IDS.contains(&v["identity"].as_str().unwrap()) {
                    assert_eq!(v["split"], "train", "the fusion identities come from train");
                    v["split"] = json!("fusion");
                }
                format!("{v}\n")
            })
            .collect();
        std::fs::write(&path, moved).unwrap();
    }
}

fn stage2_params(refit: bool) -> Stage2Params {
    let mut p = json!({
        "model": {
            "audio": tiny_audio(),
            "visual_backbone": {"img_size": 32, "embed_dim": 32, "depth": 1, "num_heads": 2},
            "a2v_nhead": 2, "a2v_layers": 1, "predictor_dim_feedforward": 64
        },
        "recipe": {"epochs": 2, "lr": 1e-3, "batch_size": 8, "seed": 3, "workers": 1,
                   "bootstrap_replicates": 50, "report_train": true,
                   "schedule": {"kind": "warmup_cosine", "warmup": 1, "final_factor": 0.1}},
    });
    if refit {
        p["fusion_refit"] = json!({"epochs": 3, "lr": 1e-2});
    }
    parse_params("stage2", &p).unwrap()
}

/// Trains the tiny stage 1 on `root`; returns its output folder.
fn stage1(root: &Path, tmp: &Path) -> std::path::PathBuf {
    let out = tmp.join("s1");
    let p: Stage1Params = parse_params(
        "stage1",
        &json!({"model": tiny_audio(),
                "recipe": {"epochs": 1, "lr": 1e-3, "batch_size": 4, "seed": 3, "workers": 1,
                           "bootstrap_replicates": 0}}),
    )
    .unwrap();
    run_stage1(&p, &paths(root, None, &out, &tmp.join("w1"))).unwrap();
    out
}

fn scored_splits(out: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(out.join("scores.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["split"].as_str().unwrap().to_string(),
                v["identity"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_refit_changes_only_the_gate_and_reads_the_held_out_identities() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("elements");
    elements(&root, true);
    let set = ElementSet::open(&root).unwrap();
    let fusion = set.split(Split::Fusion);
    assert_eq!(fusion.len(), 2 * pipeline_models::category::ALL.len());
    // The held-out identities are in no other part of the split.
    for i in set.split(Split::Train) {
        assert!(!FUSION_IDS.contains(&set.clips[i].identity.as_str()));
    }
    let s1 = stage1(&root, tmp.path());
    // Stage 1 scored its validation and test clips, never the fusion ones.
    let s1_scored = scored_splits(&s1);
    assert!(!s1_scored.is_empty());
    assert!(s1_scored
        .iter()
        .all(|(split, id)| (split == "validation" || split == "test")
            && !FUSION_IDS.contains(&id.as_str())));

    let out = tmp.path().join("s2");
    let work = tmp.path().join("w2");
    run_stage2(&stage2_params(true), &paths(&root, Some(&s1), &out, &work)).unwrap();
    let joint = read_tensors(&work.join("checkpoints").join("best.safetensors")).unwrap();
    let refit = read_tensors(&out.join("model.safetensors")).unwrap();
    assert_eq!(joint.len(), refit.len());
    let (mut gate_changed, mut others) = (0, 0);
    for (name, t) in &refit {
        if name.starts_with("conf_net.") {
            gate_changed += usize::from(!t.equal(&joint[name]));
        } else {
            assert!(t.equal(&joint[name]), "{name} changed in the fusion refit");
            others += 1;
        }
    }
    assert!(gate_changed > 0, "the refit left conf_net as it was");
    assert!(others > 10);

    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let r = &m["extra"]["fusion_refit"];
    assert_eq!(r["held_out_clips"], json!(fusion.len()));
    assert_eq!(r["joint_epochs_run"], json!(2));
    assert_eq!(m["epochs_run"], json!(3), "{m}");
    assert!(m["test"]["overall"]["final"]["auc"].is_number());
    assert!(r["joint_test"]["overall"]["final"]["auc"].is_number());
    // Each epoch's steps tell which clips it trained on: the joint epochs
    // the training split's, the refit's the fusion split's (batches of 8).
    let steps = |n: usize| json!(n.div_ceil(8));
    let train = set.split(Split::Train).len();
    assert_ne!(
        steps(train),
        steps(fusion.len()),
        "the two splits must differ here"
    );
    for rec in r["joint_history"].as_array().unwrap() {
        assert_eq!(rec["steps"], steps(train), "joint epoch {}", rec["epoch"]);
    }
    let history = std::fs::read_to_string(out.join("history.jsonl")).unwrap();
    assert_eq!(history.lines().count(), 3);
    for line in history.lines() {
        let rec: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            rec["steps"],
            steps(fusion.len()),
            "refit epoch {}",
            rec["epoch"]
        );
    }
    // `report_train`: the training clips are scored too, in-sample, and the
    // fusion identities are not among them.
    assert!(
        m["train_in_sample"]["overall"]["final"]["auc"].is_number(),
        "{m}"
    );
    let s2_scored = scored_splits(&out);
    let in_sample: Vec<_> = s2_scored
        .iter()
        .filter(|(split, _)| split == "train_in_sample")
        .collect();
    assert_eq!(in_sample.len(), train);
    assert!(in_sample
        .iter()
        .all(|(_, id)| !FUSION_IDS.contains(&id.as_str())));
    let n_val_test = set.split(Split::Val).len() + set.split(Split::Test).len();
    assert_eq!(s2_scored.len(), n_val_test + train);
}

#[test]
fn a_refit_without_a_fusion_split_names_the_parameter_to_set() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("elements");
    elements(&root, false);
    let s1 = stage1(&root, tmp.path());
    let out = tmp.path().join("s2");
    let err = run_stage2(
        &stage2_params(true),
        &paths(&root, Some(&s1), &out, &tmp.path().join("w2")),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("split.fusion_fraction"), "{msg}");
    // Refused before any training: no checkpoint was written.
    assert!(!tmp
        .path()
        .join("w2")
        .join("checkpoints")
        .join("best.safetensors")
        .exists());
    assert!(!out.join("model.safetensors").exists());
}
