//! `pipeline metrics diff` and `pipeline params diff` between two recorded
//! steps of a stage, after a parameter change: the older step's metrics come
//! from the store, its file having been overwritten since.

mod common;
use common::Ws;

const DAG: &str = r#"stages:
  train:
    cmd: >-
      lr=$(sed -n 's/^  lr: //p' params.yaml) && mkdir -p model &&
      awk -v lr="$lr" 'BEGIN { printf "{\"test\": {\"auc\": %.2f, \"n\": 4}, \"history\": [{\"epoch\": 0}]}", 1 - lr }' > model/metrics.json
    params: [train.lr]
    outs: [model]
"#;

#[test]
fn a_parameter_change_shows_in_both_diffs() {
    let ws = Ws::new(DAG);
    ws.write("params.yaml", "train:\n  lr: 0.1\n");
    ws.ok(&["run"]);
    let (code, _, err) = ws.run(&["metrics", "diff"]);
    assert_ne!(code, 0);
    assert!(err.contains("fewer than two recorded steps"), "{err}");

    ws.write("params.yaml", "train:\n  lr: 0.05\n");
    ws.ok(&["run"]);
    let text = ws.ok(&["metrics", "diff"]);
    assert!(
        text.contains("metrics of train: step 1 -> step 2"),
        "{text}"
    );
    let line = text.lines().find(|l| l.starts_with("test.auc")).unwrap();
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells, ["test.auc", "0.9000", "0.9500", "+0.0500"], "{text}");
    assert!(
        !text.contains("test.n"),
        "unchanged values are left out: {text}"
    );
    assert!(!text.contains("history"), "{text}");
    assert!(ws.ok(&["metrics", "diff", "--all"]).contains("test.n"));

    let v: serde_json::Value =
        serde_json::from_str(&ws.ok(&["metrics", "diff", "1", "2", "--json"])).unwrap();
    assert_eq!(v["old_step"], 1);
    assert_eq!(v["rows"][0]["key"], "test.auc");
    assert_eq!(v["rows"][0]["old"], 0.9);
    assert_eq!(v["rows"][0]["new"], 0.95);

    let p: serde_json::Value =
        serde_json::from_str(&ws.ok(&["params", "diff", "--stage", "train", "--json"])).unwrap();
    assert_eq!(p["rows"].as_array().unwrap().len(), 1, "{p}");
    assert_eq!(p["rows"][0]["key"], "train.lr");
    assert_eq!(p["rows"][0]["old"], 0.1);
    assert_eq!(p["rows"][0]["new"], 0.05);
    let (code, _, err) = ws.run(&["params", "diff", "1"]);
    assert_ne!(code, 0);
    assert!(err.contains("name two steps"), "{err}");
}
