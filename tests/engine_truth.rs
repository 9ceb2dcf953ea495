//! What auditors read is true now: lineage checks the disk against the
//! record, verify covers sources too, and status never calls a step whose
//! processes are gone "running".

mod common;

use std::time::{Duration, Instant};

use common::{alive, wait_for, Ws};

const TWO: &str =
    "stages:\n  make:\n    cmd: sh make.sh\n    deps: [make.sh]\n    outs: [final.txt, out_a]\n";

fn made() -> Ws {
    let ws = Ws::new(TWO);
    ws.write(
        "make.sh",
        "echo one > final.txt; mkdir -p out_a; echo f > out_a/f.txt\n",
    );
    ws.ok(&["run"]);
    ws
}

fn lineage_json(ws: &Ws, path: &str) -> serde_json::Value {
    let (code, out, err) = ws.run(&["lineage", path, "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn lineage_marks_a_forged_and_a_missing_output() {
    let ws = made();
    assert_eq!(
        lineage_json(&ws, "final.txt")["root"]["now"]["state"],
        "unchanged"
    );
    ws.write("final.txt", "forged\n");
    let l = lineage_json(&ws, "final.txt");
    assert_eq!(l["root"]["now"]["state"], "changed", "{l}");
    let text = ws.ok(&["lineage", "final.txt"]);
    assert!(text.contains("CHANGED since recorded"), "{text}");
    std::fs::remove_file(ws.path("final.txt")).unwrap();
    let text = ws.ok(&["lineage", "final.txt"]);
    assert!(text.contains("MISSING now"), "{text}");
    // The source it was made from is checked too.
    ws.write("make.sh", "echo two > final.txt\n");
    let l = lineage_json(&ws, "final.txt");
    let input = &l["root"]["produced_by"]["artifacts"][0];
    assert_eq!(input["path"], "make.sh", "{l}");
    assert_eq!(input["now"]["state"], "changed", "{l}");
}

#[test]
fn lineage_inside_a_folder_checks_the_file_and_refuses_a_path_that_is_not_there() {
    let ws = made();
    let text = ws.ok(&["lineage", "out_a/f.txt"]);
    assert!(text.contains("this file is part of out_a"), "{text}");
    assert!(!text.contains("CHANGED"), "{text}");
    ws.write("out_a/f.txt", "other\n");
    let text = ws.ok(&["lineage", "out_a/f.txt"]);
    assert!(text.contains("CHANGED since recorded"), "{text}");
    let (code, _, err) = ws.run(&["lineage", "out_a/no_such_file"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no such file"), "{err}");
    ws.write("out_a/new.txt", "added\n");
    let text = ws.ok(&["lineage", "out_a/new.txt"]);
    assert!(text.contains("not in its recorded version"), "{text}");
}

#[test]
fn verify_covers_the_sources() {
    let ws = made();
    let out = ws.ok(&["verify"]);
    assert!(out.contains("0 changed"), "{out}");
    ws.write("make.sh", "echo edited > final.txt\n");
    let (code, out, _) = ws.run(&["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("changed   make.sh"), "{out}");
    assert!(out.contains("1 changed"), "{out}");
}

#[test]
fn status_after_head_and_step_were_killed_says_interrupted() {
    let ws =
        Ws::new("stages:\n  slow:\n    cmd: sleep 30; echo done > out.txt\n    outs: [out.txt]\n");
    let mut head = ws
        .cmd()
        .arg("run")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&ws.path(".pipeline/steps/1/pid"), 20);
    let live = ws.ok(&["status"]);
    assert!(live.contains("running (step 1)"), "{live}");
    head.kill().unwrap();
    head.wait().unwrap();
    let pid = ws.job_pid(1);
    // The job runs its command in a process group of its own.
    std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status()
        .unwrap();
    let t = Instant::now();
    while alive(pid) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the job survived SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = ws.ok(&["status"]);
    assert!(!st.contains("running"), "{st}");
    assert!(
        st.contains("step 1 was interrupted: its processes are gone"),
        "{st}"
    );
    assert_eq!(ws.status_json()["stages"][0]["gone"]["as"], "interrupted");
}

#[test]
fn status_after_the_head_was_killed_and_the_step_finished_says_finished() {
    let ws =
        Ws::new("stages:\n  slow:\n    cmd: sleep 1; echo done > out.txt\n    outs: [out.txt]\n");
    let pid = ws.orphan_first_step();
    let t = Instant::now();
    while alive(pid) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the step never ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = ws.ok(&["status"]);
    assert!(
        st.contains("step 1 finished after its head stopped"),
        "{st}"
    );
    let out = ws.ok(&["run"]);
    assert!(out.contains("recorded step 1"), "{out}");
}
