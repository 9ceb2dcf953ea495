//! Crash safety: `pipeline run` killed with SIGKILL at random moments. Each
//! time the store opens and passes SQLite's integrity check, no step that had
//! completed runs again, every stage ends with exactly one successful step,
//! and the rerun ends with the same output hashes as an uninterrupted run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::Ws;
use pipeline::store::{StepStatus, Store};

const PIPE: &str = r#"
stages:
  gen:
    cmd: mkdir -p gen && i=0; while [ $i -lt 40 ]; do echo "item $i" > gen/f$i; i=$((i+1)); sleep 0.005; done
    outs: [gen]
  left:
    cmd: sleep 0.2; cat gen/* | sort > left.txt
    deps: [gen]
    outs: [left.txt]
  right:
    cmd: sleep 0.3; ls gen | wc -l > right.txt
    deps: [gen]
    outs: [right.txt]
  final:
    cmd: cat left.txt right.txt > final.txt; sleep 0.1
    deps: [left.txt, right.txt]
    outs: [final.txt]
"#;

const OUTPUTS: [&str; 4] = ["gen", "left.txt", "right.txt", "final.txt"];

fn hashes(ws: &Ws) -> BTreeMap<&'static str, String> {
    OUTPUTS
        .iter()
        .map(|o| {
            let (h, _) = pipeline::hash::hash_path(&ws.path(o), None)
                .unwrap()
                .expect("output exists");
            (*o, h.hash.to_hex().to_string())
        })
        .collect()
}

/// (stage, status, step id, has a successful result file) for every step,
/// after checking that the store opens and is consistent.
fn all_steps(rt: &tokio::runtime::Runtime, ws: &Ws) -> Vec<(String, StepStatus, i64, bool)> {
    rt.block_on(async {
        let store = Store::open(&ws.path(".pipeline/state.db"))
            .await
            .expect("the store opens after a crash");
        assert_eq!(store.integrity_check().await.unwrap(), "ok");
        let mut out = Vec::new();
        let mut i = 1;
        while let Ok(s) = store.step(pipeline::store::StepId(i)).await {
            let dir = ws.path(&format!(".pipeline/steps/{i}"));
            let done = pipeline::exec::job::read_result(&dir)
                .ok()
                .flatten()
                .is_some_and(|r| r.succeeded);
            out.push((s.stage.clone(), s.status, i, done));
            i += 1;
        }
        out
    })
}

#[test]
fn sigkill_at_random_moments_loses_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Kill moments are spread over most of the length of an uninterrupted
    // run: the shortest of three, since the first run of a fresh binary is
    // slowed by cold caches and later runs would end before late kills.
    let mut span_ms = u64::MAX;
    let mut want = BTreeMap::new();
    for _ in 0..3 {
        let reference = Ws::new(PIPE);
        let t = std::time::Instant::now();
        reference.ok(&["run"]);
        span_ms = span_ms.min(t.elapsed().as_millis() as u64);
        want = hashes(&reference);
    }
    let span_ms = (span_ms * 4 / 5).max(50);

    let trials = 24;
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut killed_mid_run = 0;
    for trial in 0..trials {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay_ms = seed % span_ms;
        let ws = Ws::new(PIPE);
        let mut child = ws
            .cmd()
            .arg("run")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let finished_first = child.try_wait().unwrap().is_some();
        child.kill().ok();
        child.wait().unwrap();
        if !finished_first {
            killed_mid_run += 1;
        }
        if !ws.path(".pipeline/state.db").exists() {
            // Killed before the store was created: nothing to check but the rerun.
            ws.ok(&["run"]);
            assert_eq!(hashes(&ws), want, "trial {trial} (killed at {delay_ms} ms)");
            continue;
        }
        let before = all_steps(&rt, &ws);
        let completed: BTreeSet<String> = before
            .iter()
            .filter(|(_, st, _, done)| *st == StepStatus::Succeeded || *done)
            .map(|(s, ..)| s.clone())
            .collect();
        let max_before = before.iter().map(|s| s.2).max().unwrap_or(0);

        let out = ws.ok(&["run"]);
        let after = all_steps(&rt, &ws);
        for (stage, _, id, _) in &after {
            if *id > max_before {
                assert!(
                    !completed.contains(stage),
                    "trial {trial} (killed at {delay_ms} ms): {stage} had completed but ran again\n{out}"
                );
            }
        }
        for stage in ["gen", "left", "right", "final"] {
            let ok = after
                .iter()
                .filter(|(s, st, ..)| s == stage && *st == StepStatus::Succeeded)
                .count();
            assert_eq!(
                ok, 1,
                "trial {trial} (killed at {delay_ms} ms): {stage} succeeded {ok} times\n{out}"
            );
        }
        assert_eq!(
            hashes(&ws),
            want,
            "trial {trial} (killed at {delay_ms} ms)\n{out}"
        );
        let again = ws.ok(&["run"]);
        assert!(
            Ws::ran(&again).is_empty(),
            "trial {trial}: a third run still found work: {again}"
        );
    }
    assert!(
        killed_mid_run >= 20,
        "only {killed_mid_run} of {trials} kills landed during a run"
    );
}
