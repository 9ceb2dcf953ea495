//! The shipped configurations parse into the stage parameters, and the paper
//! sweep expands to the reference's 72 distinct runs.

use std::path::PathBuf;

use pipeline::engine::params::read_profile_file;
use pipeline_core::stages::grid::GridFile;
use pipeline_models::recipes::{BaselineParams, Stage1Params, Stage2Params};
use pipeline_models::stage_run::parse_params;

fn read(rel: &str) -> serde_json::Value {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join(rel);
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

#[test]
fn profiles_parse() {
    for profile in ["demo", "paper"] {
        parse_params::<Stage1Params>("stage1", &read(&format!("config/{profile}/stage1.json")))
            .unwrap();
        parse_params::<Stage2Params>("stage2", &read(&format!("config/{profile}/stage2.json")))
            .unwrap();
        parse_params::<BaselineParams>(
            "baseline",
            &read(&format!("config/{profile}/baseline.json")),
        )
        .unwrap();
    }
}

#[test]
fn paper_sweep_has_72_distinct_runs() {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join("config/paper/sweep.json");
    let grid: GridFile = serde_json::from_value(read_profile_file(&path).unwrap()).unwrap();
    let runs = grid.runs().unwrap();
    assert_eq!(runs.len(), 72);
    let mut seen = std::collections::BTreeSet::new();
    for (_, cfg) in &runs {
        let p: Stage2Params = parse_params("stage2", cfg).unwrap();
        assert_eq!(p.model.a2v_nhead, 4);
        seen.insert(serde_json::to_string(cfg).unwrap());
    }
    assert_eq!(seen.len(), 72);
}
