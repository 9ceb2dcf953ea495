//! A toy-size demo workspace for the tests that run the shipped DAG: its
//! pipeline names `stages` by their shipped manifests, and `--profile tiny`
//! is the demo profile at 5 identities with 2-epoch trainings. The including
//! test declares `mod common` (tests/common) beside this module.

use std::path::Path;

use crate::common::Ws;

/// The workspace; `tweak` adjusts a stage's parameters after the toy-size
/// changes.
pub fn tiny_demo(stages: &[&str], tweak: impl Fn(&str, &mut serde_json::Value)) -> Ws {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let ws = Ws::new("stages: {}\n");
    for &stage in stages {
        let mut v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join(format!("config/demo/{stage}.json"))).unwrap(),
        )
        .unwrap();
        match stage {
            "synth" => v["identities"] = 5.into(),
            "stage1" | "baseline" => v["recipe"]["epochs"] = 2.into(),
            // Five identities leave no stratum a fusion identity to spare.
            "stage2" => {
                v["recipe"]["epochs"] = 2.into();
                v.as_object_mut().unwrap().remove("fusion_refit");
            }
            _ => {}
        }
        tweak(stage, &mut v);
        ws.write(&format!("cfg/tiny/{stage}.json"), &v.to_string());
    }
    let mut yaml = String::from("config: cfg\nstages:\n");
    for s in stages {
        let manifest = root.join(format!("stages/{s}.yaml"));
        yaml.push_str(&format!(
            "  {s}: {{manifest: \"{}\"}}\n",
            manifest.display()
        ));
    }
    ws.write("pipeline.yaml", &yaml);
    ws
}
