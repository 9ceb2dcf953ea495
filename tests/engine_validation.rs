//! Every pipeline-definition error gets one clear message naming the file,
//! line or stage, and what to do.

mod common;
use common::Ws;

fn err_of(yaml: &str, args: &[&str]) -> String {
    let ws = Ws::new(yaml);
    let (code, out, err) = ws.run(args);
    assert_ne!(code, 0, "expected a failure, got success: {out}{err}");
    err
}

#[test]
fn yaml_syntax_error_names_file_and_line() {
    let e = err_of("stages:\n  a:\n    cmd: echo\n   outs: [x]\n", &["dag"]);
    assert!(e.contains("pipeline.yaml"), "{e}");
    assert!(e.contains("line 4"), "{e}");
}

#[test]
fn unknown_key_is_rejected_with_its_line() {
    let e = err_of(
        "stages:\n  a:\n    cmd: echo hi > x\n    outz: [x]\n",
        &["dag"],
    );
    assert!(e.contains("unknown field `outz`"), "{e}");
    assert!(e.contains("line 4"), "{e}");
}

#[test]
fn missing_input_names_stage_and_path() {
    let e = err_of(
        "stages:\n  a:\n    cmd: cat nothere.txt > x\n    deps: [nothere.txt]\n    outs: [x]\n",
        &["run"],
    );
    assert!(e.contains("stage 'a' reads 'nothere.txt'"), "{e}");
    assert!(e.contains("no stage produces"), "{e}");
}

#[test]
fn two_stages_writing_one_output() {
    let e = err_of(
        "stages:\n  a:\n    cmd: echo > x\n    outs: [x]\n  b:\n    cmd: echo > x\n    outs: [x]\n",
        &["dag"],
    );
    assert!(e.contains("stages 'a' and 'b' both write 'x'"), "{e}");
}

#[test]
fn nested_outputs_are_rejected() {
    let e = err_of(
        "stages:\n  a:\n    cmd: mkdir -p d\n    outs: [d]\n  b:\n    cmd: echo > d/x\n    outs: [d/x]\n",
        &["dag"],
    );
    assert!(e.contains("overlaps"), "{e}");
}

#[test]
fn a_cycle_is_printed() {
    let e = err_of(
        "stages:\n  a:\n    cmd: cat c > a\n    deps: [c]\n    outs: [a]\n  b:\n    cmd: cat a > b\n    deps: [a]\n    outs: [b]\n  c:\n    cmd: cat b > c\n    deps: [b]\n    outs: [c]\n",
        &["dag"],
    );
    assert!(e.contains("cycle"), "{e}");
    // The cycle is printed as a path that returns to where it starts.
    let printed = e
        .split("cycle: ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .trim();
    let names: Vec<&str> = printed.split(" -> ").collect();
    assert_eq!(names.len(), 4, "{e}");
    assert_eq!(names[0], names[3], "{e}");
    for n in ["a", "b", "c"] {
        assert!(names.contains(&n), "{e}");
    }
}

#[test]
fn paths_escaping_the_workspace() {
    let e = err_of(
        "stages:\n  a:\n    cmd: echo > ../x\n    outs: [../x]\n",
        &["dag"],
    );
    assert!(e.contains("escapes the workspace"), "{e}");
    assert!(e.contains("stage 'a'"), "{e}");
    let e = err_of(
        "stages:\n  a:\n    cmd: echo\n    deps: [/etc/passwd]\n    outs: [x]\n",
        &["dag"],
    );
    assert!(e.contains("absolute"), "{e}");
}

#[test]
fn unknown_stage_in_until_lists_the_stages() {
    let e = err_of(
        "stages:\n  a:\n    cmd: echo > x\n    outs: [x]\n",
        &["run", "--until", "stage9"],
    );
    assert!(e.contains("--until stage9: no such stage"), "{e}");
    assert!(e.contains("stages: a"), "{e}");
}

#[test]
fn a_kind_without_its_program_beside_pipeline_fails_its_step_saying_so() {
    // `pipeline` alone, in a folder without `pipeline-worker` or `pipeline-media`.
    let bin = tempfile::tempdir().unwrap();
    let exe = bin.path().join("pipeline");
    std::fs::copy(common::pipeline_exe(), &exe).unwrap();
    // The demo's synth parameters, inline (JSON is YAML).
    let synth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/demo/synth.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let synth = synth.to_string();
    for (kind, program, params, outs) in [
        ("stage2", "pipeline-worker", "{}", "{model: m}"),
        (
            "synth",
            "pipeline-media",
            synth.as_str(),
            "{fakeavceleb: f, vox2: v}",
        ),
    ] {
        let ws = Ws::new(&format!(
            "stages:\n  a:\n    kind: {kind}\n    params: {params}\n    outs: {outs}\n"
        ));
        let run = |args: &[&str]| common::run_program(&exe, ws.root(), args);
        let (ok, out) = run(&["run"]);
        assert!(!ok, "{out}");
        let (_, log) = run(&["log", "a"]);
        assert!(
            log.contains(&format!("stage kind {kind}: {program} is not beside")),
            "{out}\n{log}"
        );
        assert_eq!(ws.status()[0].1, "stale", "nothing recorded as done");
    }
}

#[test]
fn unknown_kind_and_a_built_in_kind_with_bad_params() {
    let e = err_of(
        "stages:\n  a:\n    kind: frobnicate\n    outs: [x]\n",
        &["dag"],
    );
    assert!(e.contains("unknown kind 'frobnicate'"), "{e}");
    // A built-in kind's parameters are checked before anything runs: a
    // download without its sources says so and runs nothing.
    let ws = Ws::new("stages:\n  a:\n    kind: download\n    params: {}\n    outs: {data: d}\n");
    let (code, out, err) = ws.run(&["run"]);
    assert_ne!(code, 0, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains("stage 'a' (download)") && text.contains("missing field `sources`"),
        "{text}"
    );
    assert!(!ws.path("d").exists());
    assert!(!ws.path(".pipeline/steps/1").exists(), "{text}");
    // A report with no trained model among its inputs says what to declare.
    let ws = Ws::new("stages:\n  a:\n    kind: report\n    params: {}\n    outs: {report: r}\n");
    let (code, out, err) = ws.run(&["run"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("none of the report's inputs () holds a metrics.json"),
        "{out}{err}"
    );
    assert!(!ws.path("r").exists());
}

#[test]
fn the_shipped_pipeline_is_valid_for_both_profiles() {
    let root = env!("CARGO_MANIFEST_DIR");
    for profile in ["demo", "paper"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .current_dir(root)
            .args(["--profile", profile, "dag", "--format", "dot"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dot = String::from_utf8_lossy(&out.stdout);
        assert!(dot.contains("\"stage1\" -> \"stage2\""), "{dot}");
        assert!(dot.contains("\"elements\" -> \"stage1\""), "{dot}");
        let source = if profile == "demo" {
            "synth"
        } else {
            "download"
        };
        assert!(
            dot.contains(&format!("\"{source}\" -> \"seedvc\"")),
            "{dot}"
        );
    }
}
