//! The demo DAG's built-in stages through a real one-node Slurm, from nothing:
//! synth, seedvc and elements as array jobs (4 and 8 shards) gathered on the
//! head, then stage 1, stage 2 and the two-point sweep (an array of 2),
//! ending with the same artifacts as a local run.
#[path = "../../../tests/common/mod.rs"]
mod common;

use std::path::Path;

use common::Ws;

/// A workspace whose pipeline uses the shipped manifests and a small copy of
/// the demo profile (5 identities).
fn demo_ws() -> Ws {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let ws = Ws::new("stages: {}\n");
    for stage in ["synth", "seedvc", "elements", "stage1", "stage2", "sweep"] {
        let mut v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join(format!("config/demo/{stage}.json"))).unwrap(),
        )
        .unwrap();
        match stage {
            "synth" => v["identities"] = 5.into(),
            "stage1" => v["recipe"]["epochs"] = 2.into(),
            // Five identities leave no stratum a fusion identity to spare.
            "stage2" => {
                v["recipe"]["epochs"] = 2.into();
                v.as_object_mut().unwrap().remove("fusion_refit");
            }
            _ => {}
        }
        ws.write(&format!("cfg/tiny/{stage}.json"), &v.to_string());
    }
    let manifest = |s: &str| root.join(format!("stages/{s}.yaml")).display().to_string();
    ws.write(
        "pipeline.yaml",
        &format!(
            "config: cfg\nstages:\n  synth: {{manifest: \"{}\"}}\n  seedvc: {{manifest: \"{}\"}}\n  elements: {{manifest: \"{}\"}}\n  stage1: {{manifest: \"{}\"}}\n  stage2: {{manifest: \"{}\"}}\n  sweep: {{manifest: \"{}\"}}\n",
            manifest("synth"),
            manifest("seedvc"),
            manifest("elements"),
            manifest("stage1"),
            manifest("stage2"),
            manifest("sweep")
        ),
    );
    ws.write(
        "cluster.yaml",
        "poll_min_s: 0.5\npoll_max_s: 2\nresult_wait_s: 10\nmax_gpus: 0\nmax_mem: 2G\n",
    );
    ws
}

fn hash(ws: &Ws, rel: &str) -> String {
    let (h, _) = pipeline_core::hash::hash_path(&ws.path(rel), None)
        .unwrap()
        .expect("artifact exists");
    h.hash.to_hex().to_string()
}

#[test]
fn the_demo_chain_through_slurm_matches_a_local_run() {
    if !common::slurm_cluster() {
        return;
    }
    let local = demo_ws();
    local.ok(&["--profile", "tiny", "run"]);
    let slurm = demo_ws();
    let cluster_file = slurm.path("cluster.yaml");
    let out = slurm.ok(&[
        "--profile",
        "tiny",
        "run",
        "--executor",
        "slurm",
        "--cluster",
        cluster_file.to_str().unwrap(),
    ]);
    assert!(
        out.contains("seedvc: every shard finished; gathering here"),
        "{out}"
    );
    assert!(
        out.contains("elements: every shard finished; gathering here"),
        "{out}"
    );
    assert!(
        out.contains("sweep: every shard finished; gathering here"),
        "{out}"
    );
    for artifact in [
        "data/FakeAVCeleb",
        "data/vox2",
        "data/voiceclone",
        "data/elements",
    ] {
        assert_eq!(
            hash(&slurm, artifact),
            hash(&local, artifact),
            "{artifact} differs between Slurm and local runs"
        );
    }
    // Training on the CPU is deterministic for a given thread count (the
    // stages' 2 CPUs, here and in the job): the same bytes, the model
    // folders as a whole (the epochs' seconds stay in the step folders).
    for file in [
        "models/stage1/metrics.json",
        "models/stage2/metrics.json",
        "models/sweep/summary.json",
        "models/stage1",
        "models/stage2",
        "models/sweep",
    ] {
        let shown = |ws: &Ws| match file.ends_with(".json") {
            true => ws.read(file),
            false => String::new(),
        };
        assert_eq!(
            hash(&slurm, file),
            hash(&local, file),
            "{file} differs between Slurm and local runs:\n{}\n{}",
            shown(&slurm),
            shown(&local)
        );
    }
    let (code, out, err) = slurm.run(&["--profile", "tiny", "status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for s in v["stages"].as_array().unwrap() {
        assert_eq!(s["state"], "up_to_date", "{s}");
    }
    for s in v["stages"].as_array().unwrap() {
        assert_eq!(s["last_step"]["executor"], "slurm", "{s}");
    }
    // Eight element shards ran as tasks of one array job.
    let step = v["stages"][2]["last_step"]["step"].as_i64().unwrap();
    for i in 0..8 {
        assert!(slurm
            .path(&format!(".pipeline/steps/{step}/result.shard-{i}.json"))
            .exists());
    }
}
