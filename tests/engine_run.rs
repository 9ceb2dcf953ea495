//! Running and re-running pipelines: exactly the stale stages run, and
//! `status` says why each stale stage is stale.

mod common;
use common::Ws;

const THREE: &str = r#"
stages:
  make:
    cmd: mkdir -p data/files && i=0; while [ $i -lt 1000 ]; do echo "file $i" > data/files/f$i.txt; i=$((i+1)); done
    outs: [data/files]
  summarise:
    cmd: cat data/files/* | wc -l > summary.txt && echo "scale $(grep scale params.yaml)" >> summary.txt
    deps: [data/files]
    params: [summary.scale]
    outs: [summary.txt]
  final:
    cmd: cp summary.txt final.txt
    deps: [summary.txt]
    outs: [final.txt]
"#;

fn three() -> Ws {
    let ws = Ws::new(THREE);
    ws.write("params.yaml", "summary:\n  scale: 1\n");
    ws
}

#[test]
fn reruns_exactly_the_affected_stages() {
    let ws = three();
    let first = ws.ok(&["run"]);
    assert_eq!(Ws::ran(&first), ["make", "summarise", "final"]);
    assert_eq!(
        std::fs::read_dir(ws.path("data/files")).unwrap().count(),
        1000
    );

    // A second run does nothing.
    let second = ws.ok(&["run"]);
    assert!(Ws::ran(&second).is_empty(), "{second}");

    // Touching a file without changing it reruns nothing.
    let f = std::fs::File::options()
        .append(true)
        .open(ws.path("data/files/f7.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(f);
    assert!(
        ws.status().iter().all(|s| s.1 == "up_to_date"),
        "{:?}",
        ws.status()
    );
    let third = ws.ok(&["run"]);
    assert!(Ws::ran(&third).is_empty(), "{third}");

    // Changing a parameter reruns that stage; `final` reruns because its input changed.
    ws.write("params.yaml", "summary:\n  scale: 2\n");
    let fourth = ws.ok(&["run"]);
    assert_eq!(Ws::ran(&fourth), ["summarise", "final"]);

    // Changing one file's content reruns make (its output was modified) and what reads it.
    ws.write("data/files/f3.txt", "changed\n");
    let st = ws.status();
    assert_eq!(st[0].1, "stale");
    assert_eq!(
        st[0].2,
        ["output data/files was modified after it was written"]
    );
    let fifth = ws.ok(&["run"]);
    assert_eq!(
        Ws::ran(&fifth),
        ["make"],
        "make rewrites the same bytes, so nothing downstream reruns: {fifth}"
    );
    assert_eq!(ws.read("data/files/f3.txt"), "file 3\n");
}

#[test]
fn input_changes_are_counted_and_unchanged_downstream_is_cut_off() {
    // A source folder (no stage makes it) read by a stage.
    let ws = Ws::new(
        "stages:\n  count:\n    cmd: ls src | wc -l > n.txt\n    deps: [src]\n    outs: [n.txt]\n  \
         final:\n    cmd: cp n.txt final.txt\n    deps: [n.txt]\n    outs: [final.txt]\n",
    );
    for i in 0..1000 {
        ws.write(&format!("src/d{}/f{i}", i % 10), &format!("{i}"));
    }
    ws.ok(&["run"]);
    for i in [1, 2, 3] {
        ws.write(&format!("src/d{}/f{i}", i % 10), "new content");
    }
    ws.write("src/extra", "x");
    let st = ws.status();
    assert_eq!(
        st[0].2,
        ["input src changed (3 of 1,001 files changed, 1 added)"],
        "{st:?}"
    );
    // Early cutoff: `final` runs only if `count` writes other bytes.
    assert_eq!(st[1].1, "may_run");
    assert_eq!(st[1].2, ["runs if upstream count changes its output"]);
    std::fs::remove_file(ws.path("src/extra")).unwrap();
    let out = ws.ok(&["run"]);
    // The count is unchanged, so `final` is up to date after `count` reruns.
    assert_eq!(Ws::ran(&out), ["count"], "{out}");
    assert!(out.contains("up to date  final"), "{out}");
}

#[test]
fn status_says_why_for_each_reason() {
    let ws = Ws::new(
        "stages:\n  a:\n    cmd: echo \"$GREETING $(cat in.txt)\" > a.txt\n    deps: [in.txt]\n    params: [lr, opt.wd]\n    env: [GREETING]\n    outs: [a.txt]\n  \
         b:\n    cmd: cp a.txt b.txt\n    deps: [a.txt]\n    outs: [b.txt]\n",
    );
    ws.write("in.txt", "one");
    ws.write("params.yaml", "lr: 0.0001\nopt:\n  wd: 0.01\n");
    let st = ws.status();
    assert_eq!(st[0].2, ["never ran"]);
    assert_eq!(st[1].1, "stale", "it never ran, so it runs");
    assert_eq!(st[1].2, ["upstream a runs first", "never ran"]);
    ws.ok(&["run"]);
    assert!(ws.status().iter().all(|s| s.1 == "up_to_date"));

    ws.write("params.yaml", "lr: 3.0e-5\nopt:\n  wd: 0.01\n");
    assert_eq!(ws.status()[0].2, ["params changed: lr 1e-4 -> 3e-5"]);
    ws.write("params.yaml", "lr: 0.0001\nopt:\n  wd: 0.01\n");

    ws.write("in.txt", "two");
    assert_eq!(ws.status()[0].2, ["input in.txt changed"]);
    ws.write("in.txt", "one");

    let yaml = ws
        .read("pipeline.yaml")
        .replace("echo \"$GREETING", "printf '%s\\n' \"$GREETING");
    ws.write("pipeline.yaml", &yaml);
    let why = &ws.status()[0].2;
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(why[0].starts_with("command changed: `echo"), "{why:?}");
    ws.ok(&["run"]);

    let (code, out, _) = ws
        .cmd()
        .args(["status", "--json"])
        .env("GREETING", "hi")
        .output()
        .map(|o| {
            (
                o.status.code(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                (),
            )
        })
        .unwrap();
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["stages"][0]["why"][0],
        "environment GREETING changed (was unset)"
    );

    std::fs::remove_file(ws.path("b.txt")).unwrap();
    assert_eq!(ws.status()[1].2, ["output b.txt is missing"]);
    ws.write("b.txt", "tampered");
    assert_eq!(
        ws.status()[1].2,
        ["output b.txt was modified after it was written"]
    );
    let out = ws.ok(&["run", "--dry-run"]);
    assert!(
        out.contains("would run   b: output b.txt was modified after it was written"),
        "{out}"
    );
    assert_eq!(ws.read("b.txt"), "tampered", "--dry-run runs nothing");
    let out = ws.ok(&["run", "--force", "a"]);
    assert!(out.contains("forced (--force)"), "{out}");
}

#[test]
fn until_only_and_failures() {
    let ws = Ws::new(
        "stages:\n  a:\n    cmd: echo a > a.txt\n    outs: [a.txt]\n  b:\n    cmd: cat a.txt > b.txt\n    deps: [a.txt]\n    outs: [b.txt]\n  \
         bad:\n    cmd: echo boom >&2; exit 3\n    deps: [a.txt]\n    outs: [bad.txt]\n  after:\n    cmd: cat bad.txt > after.txt\n    deps: [bad.txt]\n    outs: [after.txt]\n",
    );
    let out = ws.ok(&["run", "--until", "a"]);
    assert_eq!(Ws::ran(&out), ["a"]);
    let out = ws.ok(&["run", "--only", "b"]);
    assert_eq!(Ws::ran(&out), ["b"]);
    let (code, out, err) = ws.run(&["run"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("FAILED      bad"), "{err}");
    assert!(
        err.contains("not run     after: upstream bad did not succeed"),
        "{err}"
    );
    let (_, log, _) = ws.run(&["log", "bad"]);
    assert!(log.contains("boom"), "{log}");
    let v = ws.status_json();
    assert_eq!(v["stages"][2]["last_step"]["status"], "failed");
    assert!(v["stages"][2]["last_step"]["error"]
        .as_str()
        .unwrap()
        .contains("status 3"));
}

#[test]
fn independent_stages_run_in_parallel_and_gpu_steps_get_their_devices() {
    let ws = Ws::new(
        "stages:\n  x:\n    cmd: date +%s%N > x.start; sleep 1; date +%s%N > x.end\n    outs: [x.start, x.end]\n  \
         y:\n    cmd: date +%s%N > y.start; sleep 1; date +%s%N > y.end\n    outs: [y.start, y.end]\n  \
         g:\n    cmd: echo \"$CUDA_VISIBLE_DEVICES\" > g.txt\n    outs: [g.txt]\n    resources: {gpus: 1}\n",
    );
    let o = ws
        .cmd()
        .args(["run", "-j", "2"])
        .env("CUDA_VISIBLE_DEVICES", "2,5")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = |f: &str| ws.read(f).trim().parse::<u128>().unwrap();
    assert!(
        t("x.start") < t("y.end") && t("y.start") < t("x.end"),
        "x and y did not overlap"
    );
    let g = ws.read("g.txt");
    assert!(
        g.trim() == "2" || g.trim() == "5",
        "a GPU step sees one of the offered devices: {g}"
    );
}

#[test]
fn lineage_and_verify() {
    let ws = three();
    ws.ok(&["run"]);
    let (code, out, err) = ws.run(&["lineage", "final.txt", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let root = &v["root"];
    assert_eq!(root["path"], "final.txt");
    let made = &root["produced_by"];
    assert_eq!(made["stage"], "final");
    assert_eq!(made["command"], "cp summary.txt final.txt");
    assert!(made["host"].as_str().is_some() && made["started_at"].as_i64().is_some());
    let summary = &made["artifacts"][0];
    assert_eq!(summary["path"], "summary.txt");
    assert_eq!(summary["produced_by"]["params"]["summary.scale"], 1);
    let files = &summary["produced_by"]["artifacts"][0];
    assert_eq!(files["path"], "data/files");
    assert_eq!(files["file_count"], 1000);
    assert_eq!(files["produced_by"]["stage"], "make");
    // The recorded hash of a file is plain BLAKE3 of its bytes.
    let expect = blake3::hash(ws.read("final.txt").as_bytes())
        .to_hex()
        .to_string();
    assert_eq!(root["hash"], expect.as_str());

    // A file inside a recorded folder resolves to the folder.
    let text = ws.ok(&["lineage", "data/files/f5.txt"]);
    assert!(text.contains("this file is part of data/files"), "{text}");

    let (_, out, _) = ws.run(&["lineage", "data/files", "--downstream", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let c = &v["root"]["consumed_by"][0];
    assert_eq!(c["stage"], "summarise");
    assert_eq!(c["artifacts"][0]["consumed_by"][0]["stage"], "final");

    let (code, out, _) = ws.run(&["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 artifacts checked, 0 changed"), "{out}");
    ws.write("data/files/f9.txt", "tampered");
    std::fs::remove_file(ws.path("final.txt")).unwrap();
    let (code, out, _) = ws.run(&["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("changed   data/files"), "{out}");
    assert!(out.contains("missing   final.txt"), "{out}");
    let (code, _, err) = ws.run(&["lineage", "nothing/here"]);
    assert_eq!(code, 1);
    assert!(err.contains("no recorded artifact"), "{err}");
}

#[test]
fn a_changed_code_version_is_named() {
    let ws = Ws::new("stages:\n  a:\n    cmd: echo hi > a.txt\n    outs: [a.txt]\n");
    ws.ok(&["run"]);
    // Record the step as made by an older implementation, as after an upgrade.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}", ws.path(".pipeline/state.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query("UPDATE steps SET code_version = 'cmd-0', fingerprint = 'old'")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    assert_eq!(ws.status()[0].2, ["code version changed: cmd-0 -> cmd"]);
}

/// A step's `progress.json` (written by the built-in item stages, or by a
/// command through `$PIPELINE_STEP_DIR`) is shown while it runs: as a line
/// of the run's output without a terminal, and by `status`.
#[test]
fn a_running_steps_progress_is_shown_by_the_run_and_by_status() {
    let ws = Ws::new(
        "stages:\n  slow:\n    cmd: >-\n      printf '{\"done\":3,\"failed\":1,\"total\":10,\"elapsed_ms\":1500}' > \"$PIPELINE_STEP_DIR/progress.json\";\n      touch started; while [ ! -f go ]; do sleep 0.1; done; echo > slow.txt\n    outs: [slow.txt]\n",
    );
    let head = ws
        .cmd()
        .arg("run")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !ws.path("started").exists() {
        assert!(t.elapsed().as_secs() < 30, "the step did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let running = ws.status_json()["stages"][0]["running"].clone();
    assert_eq!(running["progress"]["done"], 3, "{running}");
    assert_eq!(running["progress"]["total"], 10, "{running}");
    let (_, table, _) = ws.run(&["status"]);
    assert!(
        table.contains("3 of 10 items (30.0%), 1 failed, 2.0 items/s, about 3.5 s left"),
        "{table}"
    );
    // The head reads it within its 2-second tick.
    std::thread::sleep(std::time::Duration::from_secs(3));
    ws.write("go", "");
    let out = head.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("  progress    slow: 3 of 10 items (30.0%), 1 failed"),
        "{err}"
    );
}

/// `run --json` writes the step lifecycle as one JSON event per line on
/// stdout: each step's start (with its pid) and end (a failure with its exit
/// code), the stages it did not run, then the summary; a dry run says what
/// would run, with each reason typed.
#[test]
fn run_json_writes_the_step_lifecycle_as_events() {
    let ws = Ws::new(
        "stages:\n  a:\n    cmd: echo a > a.txt\n    outs: [a.txt]\n  \
         b:\n    cmd: exit 3\n    deps: [a.txt]\n    outs: [b.txt]\n  \
         c:\n    cmd: cp b.txt c.txt\n    deps: [b.txt]\n    outs: [c.txt]\n",
    );
    let events = |args: &[&str]| -> Vec<serde_json::Value> {
        let (_, out, _) = ws.run(args);
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let dry = events(&["run", "--dry-run", "--json"]);
    assert_eq!(dry[0]["event"], "would_run", "{dry:?}");
    assert_eq!(dry[0]["stage"], "a");
    assert_eq!(dry[0]["reasons"][0]["reason"], "never_ran");
    assert_eq!(dry.last().unwrap()["event"], "summary");
    assert_eq!(dry.last().unwrap()["dry_run"], true);

    let ev = events(&["run", "--json"]);
    let kinds: Vec<String> = ev
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["event"].as_str().unwrap(),
                e["stage"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "started a",
            "finished a",
            "started b",
            "finished b",
            "blocked c",
            "summary "
        ],
        "{ev:?}"
    );
    assert!(ev[0]["pid"].is_u64(), "{ev:?}");
    assert_eq!(ev[1]["status"], "succeeded");
    assert!(ev[1]["elapsed_ms"].is_u64());
    assert!(
        ev[1].get("exit_code").is_none(),
        "a success has no failure kind"
    );
    assert_eq!(ev[3]["status"], "failed");
    assert_eq!(ev[3]["exit_code"], 3);
    assert_eq!(ev[5]["ran"], serde_json::json!(["a"]));
    assert_eq!(ev[5]["failed"], serde_json::json!(["b"]));
    assert_eq!(ev[5]["blocked"], serde_json::json!(["c"]));
}
