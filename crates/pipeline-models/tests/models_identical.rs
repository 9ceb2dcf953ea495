//! Identical trainings write identical bytes. A file of its own: torch's
//! random generator is global to the process, so another training test
//! running beside this one (the harness runs tests in parallel threads)
//! would draw from it between the two runs.

use std::path::Path;

use pipeline_models::category::Category;
use pipeline_models::recipes::Stage1Params;
use pipeline_models::stage_run::{parse_params, run_stage1, StagePaths};
use pipeline_models::synthetic::{write_elements, SyntheticSpec};
use serde_json::json;

fn elements(dir: &Path) {
    write_elements(
        dir,
        &SyntheticSpec {
            identities: 10,
            val_identities: 3,
            test_identities: 2,
            categories: vec![Category::Rvra, Category::Rvfa, Category::RvfaVc],
            clips_each: 2,
            frame_size: 32,
            clips_per_shard: 20,
            seed: 7,
        },
    )
    .unwrap();
}

fn paths<'a>(root: &'a Path, out: &'a Path, work: &'a Path) -> StagePaths<'a> {
    StagePaths {
        elements: root,
        stage1: None,
        pretrained: None,
        out,
        work,
        threads: 2,
        verbose: true,
    }
}

/// Identical trainings write identical bytes (so a retrain that changes
/// nothing cuts off everything downstream): the epochs' wall-clock seconds
/// go to the step folder, not into `history.jsonl`.
#[test]
fn identical_trainings_write_identical_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("elements");
    elements(&root);
    let p1: Stage1Params = parse_params(
        "stage1",
        &json!({
            "model": {"d_model": 32, "proj_dim": 16, "layers": 1, "nhead": 2, "dim_feedforward": 64},
            "recipe": {"epochs": 2, "lr": 1e-3, "batch_size": 4, "seed": 3, "workers": 2,
                       "schedule": {"kind": "warmup_cosine", "warmup": 1, "final_factor": 0.1}}
        }),
    )
    .unwrap();
    let mut hashes = Vec::new();
    for run in ["a", "b"] {
        let out = tmp.path().join(format!("out-{run}"));
        let work = tmp.path().join(format!("work-{run}"));
        run_stage1(&p1, &paths(&root, &out, &work)).unwrap();
        let history = std::fs::read_to_string(out.join("history.jsonl")).unwrap();
        assert!(!history.contains("seconds"), "{history}");
        let timings = std::fs::read_to_string(work.join("timings.jsonl")).unwrap();
        assert_eq!(timings.lines().count(), 2, "{timings}");
        let (h, _) = pipeline_core::hash::hash_path(&out, None).unwrap().unwrap();
        hashes.push(h.hash.to_hex().to_string());
    }
    assert_eq!(hashes[0], hashes[1], "the two output folders differ");
}
