//! The demo profile's three trainings on a synthetic set of demo size (24
//! identities, every category, 96x96 frames), timed: the configurations must
//! stay small enough for the whole DAG to train on 2 CPU cores in minutes.
//! Ignored by default (minutes of CPU); run with `--ignored --nocapture`.

mod support;

use std::path::PathBuf;
use std::time::Instant;

use pipeline_models::category::ALL;
use pipeline_models::recipes::{BaselineParams, Stage1Params, Stage2Params};
use pipeline_models::stage_run::{parse_params, run_baseline, run_stage1, run_stage2};
use pipeline_models::synthetic::{write_elements, SyntheticSpec};
use support::paths;

fn config(name: &str) -> serde_json::Value {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join("config/demo")
        .join(name);
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
#[ignore]
fn demo_profile_trains_in_minutes() {
    let tmp = tempfile::tempdir().unwrap();
    let el = tmp.path().join("elements");
    write_elements(
        &el,
        &SyntheticSpec {
            identities: 24,
            val_identities: 7,
            test_identities: 0,
            categories: ALL.to_vec(),
            clips_each: 1,
            frame_size: 96,
            clips_per_shard: 64,
            seed: 3,
        },
    )
    .unwrap();
    let t = Instant::now();
    let p1: Stage1Params = parse_params("stage1", &config("stage1.json")).unwrap();
    let s1 = tmp.path().join("s1");
    run_stage1(&p1, &paths(&el, None, &s1, &tmp.path().join("w1"))).unwrap();
    let t1 = t.elapsed().as_secs_f64();
    // This set has no fusion split, so the fusion refit is left out.
    let mut c2 = config("stage2.json");
    c2.as_object_mut().unwrap().remove("fusion_refit");
    let p2: Stage2Params = parse_params("stage2", &c2).unwrap();
    run_stage2(
        &p2,
        &paths(
            &el,
            Some(&s1),
            &tmp.path().join("s2"),
            &tmp.path().join("w2"),
        ),
    )
    .unwrap();
    let t2 = t.elapsed().as_secs_f64() - t1;
    let pb: BaselineParams = parse_params("baseline", &config("baseline.json")).unwrap();
    run_baseline(
        &pb,
        &paths(&el, None, &tmp.path().join("b"), &tmp.path().join("wb")),
    )
    .unwrap();
    let tb = t.elapsed().as_secs_f64() - t1 - t2;
    eprintln!("demo profile, 144 clips: stage1 {t1:.0}s, stage2 {t2:.0}s, baseline {tb:.0}s");
}
