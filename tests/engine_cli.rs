//! The command line's smaller promises: a wrong profile, stage or size gets
//! a message saying what is wrong; the graph's Mermaid form keeps stages
//! apart; status words what it cannot know yet and what cannot run.

mod common;
use common::Ws;

fn failing(ws: &Ws, args: &[&str]) -> String {
    let (code, out, err) = ws.run(args);
    assert_ne!(code, 0, "expected a failure: {out}{err}");
    err
}

/// Profile `demo` (a folder of the config folder) and `paper` (named by the
/// stage `dl`, which belongs to it alone).
fn two_profiles() -> Ws {
    let ws = Ws::new(
        "config: cfg\nstages:\n  a:\n    cmd: echo > x\n    outs: [x]\n  \
         dl:\n    cmd: echo > y\n    outs: [y]\n    profiles: [paper]\n",
    );
    ws.write("cfg/demo/a.json", "{}");
    ws
}

#[test]
fn a_profile_that_does_not_exist_is_named_as_such() {
    let ws = two_profiles();
    let e = failing(&ws, &["--profile", "nosuch", "status"]);
    assert!(e.contains("profile 'nosuch' does not exist"), "{e}");
    assert!(e.contains("profiles: demo, paper"), "{e}");
    // Both known profiles load: one by its folder, one by a stage's list.
    for p in ["demo", "paper"] {
        ws.ok(&["--profile", p, "dag"]);
    }
}

#[test]
fn a_stage_of_another_profile_says_which_profile_it_belongs_to() {
    let ws = two_profiles();
    let e = failing(&ws, &["--profile", "demo", "run", "--until", "dl"]);
    assert!(
        e.contains("--until dl: stage dl belongs to the profile paper only"),
        "{e}"
    );
    assert!(e.contains("uses the profile demo"), "{e}");
}

#[test]
fn the_shipped_demo_profile_says_download_is_the_papers() {
    let out = std::process::Command::new(common::pipeline_exe())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["-w", "target/never-made", "--profile", "demo"])
        .args(["run", "--until", "download", "--dry-run"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(e.contains("belongs to the profile paper only"), "{e}");
}

#[test]
fn log_of_an_unknown_stage_says_no_such_stage() {
    let ws = Ws::new("stages:\n  a:\n    cmd: echo > x\n    outs: [x]\n");
    let e = failing(&ws, &["log", "nosuch"]);
    assert!(e.contains("log nosuch: no such stage"), "{e}");
    // A known stage that has not run yet is worded as such.
    let e = failing(&ws, &["log", "a"]);
    assert!(e.contains("stage a has never run"), "{e}");
}

#[test]
fn a_negative_or_zero_memory_request_is_refused() {
    for mem in ["-5G", "0", "0M"] {
        let ws = Ws::new(&format!(
            "stages:\n  a:\n    cmd: echo > x\n    outs: [x]\n    resources: {{mem: {mem}}}\n"
        ));
        let e = failing(&ws, &["status"]);
        assert!(e.contains("stage 'a'"), "{mem}: {e}");
        assert!(e.contains("resources.mem"), "{mem}: {e}");
    }
}

#[test]
fn mermaid_ids_are_never_keywords_and_never_merge_two_stages() {
    let ws = Ws::new(
        "stages:\n  end:\n    cmd: echo > e\n    outs: [e]\n  \
         a.b:\n    cmd: cat e > ab1\n    deps: [e]\n    outs: [ab1]\n  \
         a_b:\n    cmd: cat e > ab2\n    deps: [e]\n    outs: [ab2]\n  \
         subgraph:\n    cmd: cat ab1 ab2 > s\n    deps: [ab1, ab2]\n    outs: [s]\n",
    );
    let (code, out, err) = ws.run(&["dag", "--format", "mermaid"]);
    assert_eq!(code, 0, "{err}");
    let nodes: Vec<&str> = out
        .lines()
        .filter(|l| l.contains('['))
        .map(|l| l.trim().split('[').next().unwrap())
        .collect();
    assert_eq!(nodes.len(), 4, "{out}");
    let unique: std::collections::BTreeSet<&&str> = nodes.iter().collect();
    assert_eq!(unique.len(), 4, "two stages share an id: {out}");
    for id in &nodes {
        assert!(
            !["end", "subgraph", "graph", "flowchart"].contains(id),
            "{out}"
        );
    }
    let edges: Vec<&str> = out.lines().filter(|l| l.contains("-->")).collect();
    assert_eq!(edges.len(), 4, "{out}");
    for e in edges {
        for id in e.split("-->").map(str::trim) {
            assert!(nodes.contains(&id), "edge to an unknown node {id}: {out}");
        }
    }
}

#[test]
fn downstream_lineage_calls_the_last_output_final_not_a_source() {
    let ws = Ws::new(
        "stages:\n  make:\n    cmd: cat in.txt > mid.txt\n    deps: [in.txt]\n    outs: [mid.txt]\n  \
         last:\n    cmd: cat mid.txt > final.txt\n    deps: [mid.txt]\n    outs: [final.txt]\n",
    );
    ws.write("in.txt", "x");
    ws.ok(&["run"]);
    let (code, down, err) = ws.run(&["lineage", "in.txt", "--downstream"]);
    assert_eq!(code, 0, "{err}");
    assert!(down.contains("read by step 2: stage last"), "{down}");
    assert!(down.contains("a final output"), "{down}");
    assert!(!down.contains("a source"), "{down}");
    // Upstream, the input is still a source.
    let (_, up, _) = ws.run(&["lineage", "final.txt"]);
    assert!(up.contains("a source"), "{up}");
}

#[test]
fn status_says_a_stage_below_a_rerun_may_run_and_the_run_agrees() {
    let ws = Ws::new(
        "stages:\n  make:\n    cmd: python3 make.py > mid.txt\n    deps: [make.py]\n    outs: [mid.txt]\n  \
         summarize:\n    cmd: cat mid.txt > sum.txt\n    deps: [mid.txt]\n    outs: [sum.txt]\n  \
         final:\n    cmd: cat sum.txt > final.txt\n    deps: [sum.txt]\n    outs: [final.txt]\n",
    );
    ws.write("make.py", "print(42)\n");
    ws.ok(&["run"]);
    // A comment changes make.py but not what it prints.
    ws.write("make.py", "# a comment\nprint(42)\n");
    let st = ws.status();
    assert_eq!(st[0].1, "stale");
    assert_eq!(
        (st[1].1.as_str(), st[1].2.as_slice()),
        (
            "may_run",
            &["runs if upstream make changes its output".to_string()][..]
        )
    );
    assert_eq!(st[2].1, "may_run", "{st:?}");
    let dry = ws.ok(&["run", "--dry-run"]);
    assert!(dry.contains("would run   make"), "{dry}");
    assert!(
        dry.contains("may run     summarize: runs if upstream make changes its output"),
        "{dry}"
    );
    assert!(!dry.contains("would run   summarize"), "{dry}");
    let out = ws.ok(&["run"]);
    assert_eq!(Ws::ran(&out), ["make"], "{out}");
}

#[test]
fn a_stage_that_cannot_run_fails_status_and_blocks_the_stages_below() {
    let ws = Ws::new(
        "stages:\n  a:\n    cmd: echo > a.txt\n    params: [train.lr]\n    outs: [a.txt]\n  \
         b:\n    cmd: cat a.txt > b.txt\n    deps: [a.txt]\n    outs: [b.txt]\n  \
         c:\n    cmd: cat b.txt > c.txt\n    deps: [b.txt]\n    outs: [c.txt]\n  \
         free:\n    cmd: echo > f.txt\n    outs: [f.txt]\n",
    );
    ws.write("params.yaml", "train:\n  epochs: 3\n");
    let (code, out, err) = ws.run(&["status", "--json"]);
    assert_eq!(
        code, 1,
        "status of a stage that cannot run must fail: {out}{err}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let st = |i: usize| v["stages"][i]["state"].as_str().unwrap().to_string();
    assert_eq!(st(0), "invalid");
    let why = v["stages"][0]["why"][0].as_str().unwrap();
    assert!(why.contains("train.lr"), "{why}");
    for i in [1, 2] {
        assert_eq!(st(i), "blocked", "{v}");
        assert_eq!(v["stages"][i]["blocked_by"], serde_json::json!(["a"]));
        assert_eq!(
            v["stages"][i]["why"][0], "blocked by a, which cannot run",
            "{v}"
        );
    }
    assert_eq!(st(3), "stale", "an unrelated stage is not blocked");
    let (code, text, err) = ws.run(&["status"]);
    assert_eq!(code, 1, "{err}");
    assert!(text.contains("cannot run"), "{text}");
    let (code, _, dry) = ws.run(&["run", "--dry-run"]);
    assert_eq!(code, 1, "{dry}");
    assert!(dry.contains("blocked by a, which cannot run"), "{dry}");
}

#[test]
fn a_bad_parameter_of_a_built_in_kind_is_reported_by_status_and_dry_run_before_anything_runs() {
    let ws = Ws::new(
        "config: cfg\nstages:\n  first:\n    cmd: echo > a.txt\n    outs: [a.txt]\n  \
         synth:\n    kind: synth\n    deps: [a.txt]\n    outs: {fakeavceleb: data/fav, vox2: data/vox2}\n",
    );
    ws.write(
        "cfg/demo/synth.json",
        r#"{"identities": "sixty", "seed": 1}"#,
    );
    let (code, out, err) = ws.run(&["status", "--json"]);
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stages"][0]["state"], "stale");
    assert_eq!(v["stages"][1]["state"], "invalid");
    let why = v["stages"][1]["why"][0].as_str().unwrap();
    for part in [
        "stage 'synth' (synth)",
        "cfg/demo/synth.json",
        "parameter 'identities'",
        "invalid type: string \"sixty\", expected usize",
    ] {
        assert!(why.contains(part), "{part}: {why}");
    }
    let (code, _, dry) = ws.run(&["run", "--dry-run"]);
    assert_eq!(code, 1, "{dry}");
    assert!(dry.contains("parameter 'identities'"), "{dry}");
    // A real run refuses before the first stage runs.
    let (code, _, err) = ws.run(&["run"]);
    assert_eq!(code, 1);
    assert!(err.contains("parameter 'identities'"), "{err}");
    assert!(!ws.path("a.txt").exists(), "the stage above ran: {err}");
}
