//! The A2V mechanism, pinned: stage 2 trained with the demo's recipe at
//! reduced size on a seeded set whose only difference between real and fake
//! clips is lip sync (RVRA: the mouth follows the sound; FVRA: it follows
//! another utterance of the same voice) must tell them apart with its
//! A2V-only score on held-out identities. This is the branch that sat at
//! chance on the demo before the time-aligned discrepancy.

use pipeline_models::checkpoint::save_vars;
use pipeline_models::recipes::Stage2Params;
use pipeline_models::stage1::{AudioPretrainNet, Stage1Config};
use pipeline_models::stage_run::{parse_params, run_stage2, StagePaths};
use pipeline_models::synthetic::{write_sync_elements, SyncSpec};
use serde_json::json;
use tch::nn::VarStore;
use tch::Device;

fn audio_config() -> serde_json::Value {
    json!({"d_model": 64, "proj_dim": 16, "patch_len": 16, "layers": 2, "nhead": 4,
           "dim_feedforward": 128, "dropout": 0.1})
}

#[test]
fn the_a2v_branch_separates_in_sync_from_out_of_sync_clips() {
    let tmp = tempfile::tempdir().unwrap();
    let elements = tmp.path().join("elements");
    write_sync_elements(
        &elements,
        &SyncSpec {
            identities: (48, 24, 30),
            frame_size: 32,
            lead_seconds: 0.04,
            seed: 11,
        },
    )
    .unwrap();
    // Stage 2 needs a stage-1 encoder; an untrained one keeps the loudness
    // envelope in its tokens, which is all this set's audio holds.
    let stage1 = tmp.path().join("stage1");
    std::fs::create_dir_all(&stage1).unwrap();
    tch::manual_seed(5);
    let vs = VarStore::new(Device::Cpu);
    let cfg: Stage1Config = serde_json::from_value(audio_config()).unwrap();
    let _net = AudioPretrainNet::new(vs.root(), &cfg);
    save_vars(&vs, &stage1.join("model.safetensors")).unwrap();

    let params: Stage2Params = parse_params(
        "stage2",
        &json!({
            "model": {
                "audio": audio_config(),
                "visual_backbone": {"img_size": 32, "patch_size": 16, "n_frames": 16,
                    "tubelet_size": 2, "embed_dim": 64, "depth": 2, "num_heads": 4},
                "a2v_nhead": 4, "a2v_layers": 2, "predictor_dim_feedforward": 128,
                "dropout": 0.0, "a2v_mode": "time_aligned", "audio_lead_seconds": 0.04
            },
            "recipe": {"epochs": 12, "lr": 3e-4, "weight_decay": 0.1, "batch_size": 8,
                "seed": 2, "workers": 2, "bootstrap_replicates": 200,
                "schedule": {"kind": "warmup_cosine", "warmup": 1, "final_factor": 0.02}},
            "backbone_lr_scale": 1.0,
            "lambda_align": 0.5,
            "margin_align": 0.5,
            "augment": {"grayscale_p": 0.0, "hflip_p": 0.5}
        }),
    )
    .unwrap();
    let (out, work) = (tmp.path().join("out"), tmp.path().join("work"));
    run_stage2(
        &params,
        &StagePaths {
            elements: &elements,
            stage1: Some(&stage1),
            pretrained: None,
            out: &out,
            work: &work,
            threads: 2,
            verbose: true,
        },
    )
    .unwrap();
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let a2v = &metrics["test"]["per_category"]["a2v"]["FakeVideo-RealAudio"];
    let auc = a2v["auc"].as_f64().unwrap();
    eprintln!(
        "A2V-only AUC, in sync vs out of sync, {} + {} test clips: {auc:.3} (95% CI {})",
        a2v["n_real"], a2v["n_fake"], a2v["auc_ci95"]
    );
    assert!(
        auc > 0.75,
        "the A2V branch does not separate in-sync from out-of-sync clips: AUC {auc:.3}"
    );
}
