//! `pipeline gc` and the memo: an item stage's memo goes once its output is
//! recorded (unless kept); gc lists, then removes, what nothing needs.

mod common;

use common::Ws;

const MEMO: &str = "stages:\n  items:\n    cmd: head -c 200000 /dev/zero > $PIPELINE_ITEMS_DIR/memo.bin; sh make.sh\n    deps: [make.sh]\n    outs: [out.txt]\n";

#[test]
fn a_memo_is_dropped_once_its_output_is_recorded_unless_kept() {
    let ws = Ws::new(MEMO);
    ws.write("make.sh", "echo one > out.txt\n");
    ws.ok(&["run"]);
    assert!(
        !ws.path(".pipeline/items/items").exists(),
        "the memo stayed"
    );
    let ws = Ws::new(&MEMO.replace("    outs:", "    keep_memo: true\n    outs:"));
    ws.write("make.sh", "echo one > out.txt\n");
    ws.ok(&["run"]);
    assert!(ws.path(".pipeline/items/items/memo.bin").exists());
    let out = ws.ok(&["gc", "--dry-run"]);
    assert!(!out.contains("memo"), "a kept memo is listed: {out}");
}

#[test]
fn gc_lists_then_removes_what_nothing_needs() {
    let ws = Ws::new(MEMO);
    ws.write("make.sh", "echo one > out.txt\n");
    ws.ok(&["run"]);
    ws.write("make.sh", "echo two > out.txt\n");
    ws.ok(&["run"]);
    // Left behind by an older version: a staging folder and a memo.
    ws.write(".pipeline/steps/2/staging/left.bin", &"x".repeat(5000));
    ws.write(".pipeline/items/items/memo.bin", &"y".repeat(7000));
    ws.write(".pipeline/items/gone/memo.bin", "z");
    let dry = ws.ok(&["gc", "--dry-run"]);
    assert!(
        dry.contains(".pipeline/steps/1  (step 1 (items, succeeded)"),
        "{dry}"
    );
    assert!(dry.contains(".pipeline/steps/2/staging"), "{dry}");
    assert!(
        dry.contains(".pipeline/items/items  (the memo of stage items"),
        "{dry}"
    );
    assert!(dry.contains("stage gone, which never ran here"), "{dry}");
    assert!(
        !dry.contains(".pipeline/steps/2  "),
        "the newest step is listed: {dry}"
    );
    assert!(dry.contains("4.9 KiB"), "sizes: {dry}");
    assert!(dry.contains("nothing removed"), "{dry}");
    assert!(ws.path(".pipeline/steps/1").exists());
    let out = ws.ok(&["gc"]);
    assert!(out.contains("freed"), "{out}");
    assert!(!ws.path(".pipeline/steps/1").exists());
    assert!(!ws.path(".pipeline/steps/2/staging").exists());
    assert!(!ws.path(".pipeline/items").read_dir().unwrap().any(|_| true));
    assert!(ws.path(".pipeline/steps/2/result.json").exists());
    // Nothing recorded was lost.
    let st = ws.status();
    assert!(st.iter().all(|(_, s, _)| s == "up_to_date"), "{st:?}");
    assert!(ws.ok(&["verify"]).contains("0 changed"));
    let again = ws.ok(&["gc", "--dry-run"]);
    assert!(again.contains("in 0 places"), "{again}");
}
