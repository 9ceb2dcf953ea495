//! A lost, emptied or damaged store is noticed and rebuilt from the step
//! folders by `pipeline recover`, never silently restarted.

mod common;

use common::Ws;

const TWO: &str = "stages:\n  make:\n    cmd: echo made >> runs.log; sh make.sh\n    deps: [make.sh]\n    outs: [out.txt]\n  \
                   next:\n    cmd: cp out.txt next.txt\n    deps: [out.txt]\n    outs: [next.txt]\n";

fn ran_once() -> Ws {
    let ws = Ws::new(TWO);
    ws.write("make.sh", "echo one > out.txt\n");
    ws.ok(&["run"]);
    assert_eq!(ws.read("runs.log"), "made\n");
    ws
}

fn db(ws: &Ws) -> std::path::PathBuf {
    ws.path(".pipeline/state.db")
}

fn assert_refused(ws: &Ws, args: &[&str], what: &str) {
    let (code, out, err) = ws.run(args);
    assert_eq!(code, 1, "{args:?}: {out}{err}");
    assert!(err.contains(what), "{args:?}: {err}");
    assert!(err.contains("pipeline recover"), "{args:?}: {err}");
    assert_eq!(
        err.matches("cannot be read").count().max(1),
        1,
        "said once: {err}"
    );
}

fn assert_up_to_date(ws: &Ws) {
    let st = ws.status();
    assert!(
        st.iter().all(|(_, state, _)| state == "up_to_date"),
        "{st:?}"
    );
    let out = ws.ok(&["run"]);
    assert!(Ws::ran(&out).is_empty(), "{out}");
    assert_eq!(ws.read("runs.log"), "made\n", "nothing ran again");
}

#[test]
fn an_emptied_store_is_refused_then_rebuilt_with_the_same_hashes() {
    let ws = ran_once();
    let (_, before, _) = ws.run(&["lineage", "next.txt", "--json"]);
    let starts = ws.read(".pipeline/steps/1/starts");
    std::fs::write(db(&ws), b"").unwrap();
    assert_refused(&ws, &["status"], "holds no steps");
    assert_refused(&ws, &["run"], "holds no steps");
    assert_eq!(ws.read(".pipeline/steps/1/starts"), starts, "no new step 1");
    let out = ws.ok(&["recover"]);
    assert!(out.contains("recovered 2 steps"), "{out}");
    assert!(out.contains("2 succeeded"), "{out}");
    assert!(
        out.contains("2 outputs checked against their recorded hashes, 0 changed"),
        "{out}"
    );
    let (_, after, _) = ws.run(&["lineage", "next.txt", "--json"]);
    let (b, a): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&before).unwrap(),
        serde_json::from_str(&after).unwrap(),
    );
    assert_eq!(a["root"]["hash"], b["root"]["hash"]);
    assert_eq!(a["root"]["produced_by"]["step"], 2);
    assert_eq!(
        a["root"]["produced_by"]["artifacts"][0]["hash"],
        b["root"]["produced_by"]["artifacts"][0]["hash"]
    );
    assert_up_to_date(&ws);
    // A new step takes a new id, never an old folder's.
    ws.write("make.sh", "echo two > out.txt\n");
    ws.ok(&["run"]);
    let st = ws.status_json();
    assert_eq!(st["stages"][0]["last_step"]["step"], 3, "{st}");
    assert_eq!(ws.read(".pipeline/steps/1/starts"), starts);
}

#[test]
fn a_deleted_store_is_rebuilt() {
    let ws = ran_once();
    std::fs::remove_file(db(&ws)).unwrap();
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(ws.path(&format!(".pipeline/state.db{side}")));
    }
    assert_refused(&ws, &["status"], "holds no steps");
    ws.ok(&["recover"]);
    assert_up_to_date(&ws);
}

#[test]
fn a_damaged_store_is_kept_aside_and_rebuilt() {
    let ws = ran_once();
    let garbage = b"this is no database ".repeat(300);
    std::fs::write(db(&ws), &garbage).unwrap();
    assert_refused(&ws, &["status"], "cannot be read");
    let out = ws.ok(&["recover"]);
    assert!(out.contains("kept it as"), "{out}");
    let aside: Vec<_> = std::fs::read_dir(ws.path(".pipeline"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.db.damaged-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{out}");
    assert_eq!(std::fs::read(aside[0].path()).unwrap(), garbage);
    assert_up_to_date(&ws);
}

#[test]
fn an_output_changed_while_the_store_was_lost_is_found_and_remade() {
    let ws = ran_once();
    std::fs::write(db(&ws), b"").unwrap();
    ws.write("out.txt", "forged\n");
    let out = ws.ok(&["recover"]);
    assert!(out.contains("1 changed since"), "{out}");
    assert!(out.contains("out.txt"), "{out}");
    let out = ws.ok(&["run"]);
    assert_eq!(Ws::ran(&out), ["make"], "{out}");
    assert_eq!(ws.read("out.txt"), "one\n");
}
