//! The two programs agree on the model kinds: every kind the engine's table
//! sends to `pipeline-worker` is implemented there with the same code
//! version (a version bumped in one program only would record outputs of one
//! code under the other's fingerprint), and `pipeline` itself never links
//! libtorch.

use std::collections::BTreeMap;
use std::process::Command;

#[path = "../../../tests/common/mod.rs"]
mod common;

fn kinds(exe: &std::path::Path) -> Vec<serde_json::Value> {
    let o = Command::new(exe).arg("kinds").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn worker_implements_exactly_the_engines_worker_kinds_at_its_versions() {
    let engine = kinds(&common::pipeline_exe());
    let worker = kinds(std::path::Path::new(env!("CARGO_BIN_EXE_pipeline-worker")));
    let want: BTreeMap<String, u64> = engine
        .iter()
        .filter(|k| k["home"] == "worker")
        .map(|k| {
            (
                k["kind"].as_str().unwrap().to_string(),
                k["version"].as_u64().unwrap(),
            )
        })
        .collect();
    let have: BTreeMap<String, u64> = worker
        .iter()
        .map(|k| {
            (
                k["kind"].as_str().unwrap().to_string(),
                k["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        want.len(),
        4,
        "stage1, stage2, baseline, stage2_sweep: {engine:?}"
    );
    assert_eq!(
        have, want,
        "pipeline-worker's kinds against the engine's table"
    );
}

#[test]
fn pipeline_does_not_link_libtorch_and_the_worker_does() {
    let needed = |exe: &std::path::Path| {
        let o = Command::new("readelf")
            .arg("-d")
            .arg(exe)
            .output()
            .expect("readelf (binutils)");
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains("(NEEDED)"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let engine = needed(&common::pipeline_exe());
    assert!(
        engine
            .iter()
            .all(|l| !l.contains("torch") && !l.contains("c10")),
        "pipeline links libtorch: {engine:?}"
    );
    let worker = needed(std::path::Path::new(env!("CARGO_BIN_EXE_pipeline-worker")));
    assert!(
        worker.iter().any(|l| l.contains("libtorch")),
        "pipeline-worker does not link libtorch: {worker:?}"
    );
}
