//! `pipeline checkout PATH --step N`: an earlier version comes back when its
//! bytes are still in the workspace (here a copy the command keeps in its
//! step folder, as training keeps its checkpoints), the version it replaces
//! is set aside and comes back the same way, and a version whose bytes are
//! gone is named with the files that are missing.

mod common;
use common::Ws;

const DAG: &str = r#"stages:
  make:
    cmd: >-
      mkdir -p out && cp src.txt out/a.txt && echo same > out/b.txt &&
      cp src.txt "$PIPELINE_STEP_DIR/a.copy"
    deps: [src.txt]
    outs: [out]
  plain:
    cmd: cat out/a.txt out/b.txt > plain.txt
    deps: [out]
    outs: [plain.txt]
"#;

#[test]
fn an_earlier_version_comes_back_from_the_step_folders() {
    let ws = Ws::new(DAG);
    ws.write("src.txt", "one\n");
    ws.ok(&["run"]);
    ws.write("src.txt", "two\n");
    ws.ok(&["run"]);
    // Each run: make, then plain (which reads its output).
    let (first_make, first_plain, newest) = (1, 2, 3);
    let (_, out, _) = ws.run(&["lineage", "out", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["root"]["produced_by"]["step"], newest);
    let newest_hash = v["root"]["hash"].as_str().unwrap().to_string();
    assert_eq!(ws.read("out/a.txt"), "two\n");

    let text = ws.ok(&["checkout", "out", "--step", &first_make.to_string()]);
    assert!(
        text.contains(&format!("restored out as step {first_make} recorded it")),
        "{text}"
    );
    assert_eq!(ws.read("out/a.txt"), "one\n");
    assert_eq!(ws.read("out/b.txt"), "same\n");
    let kept = format!(".pipeline/checkout/{newest_hash}");
    assert_eq!(ws.read(&format!("{kept}/a.txt")), "two\n");
    // The restored bytes are the recorded version: verify says nothing changed
    // for it, and status sees the workspace's output as the older one.
    let (code, out, _) = ws.run(&["verify", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let changed: Vec<&str> = v["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        (code, changed),
        (1, vec!["out"]),
        "the newest record of out is step {newest}'s"
    );

    // And back: the newer version was set aside, so it can be checked out too.
    let text = ws.ok(&["checkout", "out", "--step", &newest.to_string()]);
    assert!(text.contains("restored out"), "{text}");
    assert_eq!(ws.read("out/a.txt"), "two\n");
    let text = ws.ok(&["checkout", "out", "--step", &newest.to_string()]);
    assert!(text.contains("already holds the version"), "{text}");
    ws.ok(&["verify"]);

    // A single file whose old bytes nobody kept.
    let (code, _, err) = ws.run(&["checkout", "plain.txt", "--step", &first_plain.to_string()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no longer in the workspace") && err.contains("1 of 1 files are nowhere"),
        "{err}"
    );
    assert_eq!(ws.read("plain.txt"), "two\nsame\n", "nothing was touched");

    // A path the step did not record, and a step that does not exist.
    let (code, _, err) = ws.run(&["checkout", "plain.txt", "--step", &first_make.to_string()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("recorded no version of plain.txt") && err.contains("out"),
        "{err}"
    );
    let (code, _, err) = ws.run(&["checkout", "out", "--step", "99"]);
    assert_ne!(code, 0);
    assert!(err.contains("no step 99"), "{err}");
}
