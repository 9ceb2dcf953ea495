//! The workspace lock, re-attaching after the head process dies, and the
//! signals that stop a run (SIGINT, SIGTERM, SIGHUP).

mod common;

use std::time::{Duration, Instant};

use common::{alive, wait_for, Ws};

#[test]
fn a_live_lock_is_respected() {
    let ws =
        Ws::new("stages:\n  slow:\n    cmd: sleep 2; echo done > out.txt\n    outs: [out.txt]\n");
    let mut first = ws
        .cmd()
        .arg("run")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&ws.path(".pipeline/steps/1/pid"), 20);
    let (code, _, err) = ws.run(&["run"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("the workspace is locked by a running"),
        "{err}"
    );
    assert!(first.wait().unwrap().success());
    assert_eq!(ws.read("out.txt"), "done\n");
}

#[test]
fn unlock_refuses_a_live_holder_and_a_dry_run_leaves_its_steps_alone() {
    let ws = Ws::new(
        "stages:\n  slow:\n    cmd: sleep 3; echo done > out.txt\n    outs: [out.txt]\n  \
         later:\n    cmd: cp in.txt later.txt\n    deps: [in.txt]\n    outs: [later.txt]\n",
    );
    ws.write("in.txt", "x");
    // One slot: `later` waits for `slow`, so only the dry run hashes in.txt.
    let mut first = ws
        .cmd()
        .args(["run", "-j", "1"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&ws.path(".pipeline/steps/1/pid"), 20);
    let (code, _, err) = ws.run(&["unlock"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("stop that process instead"), "{err}");
    assert!(err.contains("another host"), "{err}");
    // The lock still holds: a second run is refused.
    let (code, _, err) = ws.run(&["run"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("the workspace is locked by a running"),
        "{err}"
    );
    // A dry run neither waits for the live step nor takes it over.
    let t = Instant::now();
    let (code, out, err) = ws.run(&["run", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains("re-attaching") && !err.contains("re-attaching"),
        "{out}{err}"
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "the dry run waited for the live run"
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(
        out.contains("would run   later") || err.contains("would run   later"),
        "{out}{err}"
    );
    // It wrote nothing to the live run's store: in.txt, hashed by it alone,
    // has no stat cache row.
    let rows = std::process::Command::new("sqlite3")
        .arg(ws.path(".pipeline/state.db"))
        .arg("SELECT count(*) FROM stat_cache WHERE path = 'in.txt'")
        .output()
        .expect("the sqlite3 CLI");
    assert_eq!(String::from_utf8_lossy(&rows.stdout).trim(), "0");
    assert!(first.wait().unwrap().success());
    assert_eq!(ws.read("out.txt"), "done\n");
    let (code, _, err) = ws.run(&["unlock"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("was not locked"), "{err}");
}

#[test]
fn unlock_clears_the_lock_of_a_dead_holder() {
    let ws =
        Ws::new("stages:\n  slow:\n    cmd: sleep 1; echo done > out.txt\n    outs: [out.txt]\n");
    let mut head = ws
        .cmd()
        .arg("run")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&ws.path(".pipeline/steps/1/pid"), 20);
    head.kill().unwrap();
    head.wait().unwrap();
    let (code, _, err) = ws.run(&["unlock"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("which is no longer running"), "{err}");
}

#[test]
fn a_dead_head_is_taken_over_and_its_running_step_reattached() {
    let ws = Ws::new(
        "stages:\n  slow:\n    cmd: echo run >> runs.log; sleep 1.5; echo done > out.txt\n    outs: [out.txt]\n  \
         next:\n    cmd: cp out.txt next.txt\n    deps: [out.txt]\n    outs: [next.txt]\n",
    );
    let job = ws.orphan_first_step();
    assert!(alive(job), "the step outlives its head");
    let out = ws.ok(&["run"]);
    assert!(out.contains("took over the workspace lock"), "{out}");
    assert!(out.contains("re-attaching to step 1 (slow)"), "{out}");
    assert_eq!(Ws::ran(&out), ["next"], "{out}");
    assert_eq!(ws.read("runs.log"), "run\n", "the slow step ran once");
    assert_eq!(ws.read("next.txt"), "done\n");
}

#[test]
fn sigint_sigterm_and_sighup_each_stop_the_steps_and_record_them_interrupted() {
    // Ctrl-C, `kill`/`timeout`/Slurm, and a closed terminal.
    for (sig, name) in [
        (libc::SIGINT, "SIGINT"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGHUP, "SIGHUP"),
    ] {
        stopped_by(sig, name);
    }
}

fn stopped_by(sig: i32, name: &str) {
    let ws = Ws::new(
        "stages:\n  slow:\n    cmd: sleep $(cat delay); echo done > out.txt\n    outs: [out.txt]\n",
    );
    ws.write("delay", "30");
    let mut head = ws
        .cmd()
        .arg("run")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&ws.path(".pipeline/steps/1/pid"), 20);
    let job = ws.job_pid(1);
    let t = Instant::now();
    // SAFETY: signalling a child we started.
    unsafe { libc::kill(head.id() as i32, sig) };
    let mut err = String::new();
    use std::io::Read;
    head.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = head.wait().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "{name} took {:?}",
        t.elapsed()
    );
    assert_eq!(status.code(), Some(128 + sig), "{name}: {err}");
    assert!(err.contains(&format!("interrupted by {name}")), "{err}");
    let t = Instant::now();
    while alive(job) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(job), "{name}: the step's process was stopped");
    let v = ws.status_json();
    assert_eq!(
        v["stages"][0]["last_step"]["status"], "interrupted",
        "{name}"
    );
    assert_eq!(v["stages"][0]["state"], "stale");
    assert!(!ws.path("out.txt").exists());
    // The lock was released, not left for the next run to take over.
    ws.write("delay", "0");
    let out = ws.ok(&["run"]);
    assert!(!out.contains("took over"), "{name}: {out}");
    assert!(
        out.contains("interrupted"),
        "status shows the earlier interruption as the reason: {out}"
    );
}

/// An error in the middle of a run (here: an input folder holding a FIFO,
/// which no artifact may hold) stops the steps the run started and closes
/// the run row; nothing is left running or recorded as running.
#[test]
fn an_error_mid_run_stops_the_running_steps_and_closes_the_run() {
    let ws = Ws::new(
        "stages:\n  slow:\n    cmd: sleep 30; echo done > out.txt\n    outs: [out.txt]\n  \
         mark:\n    cmd: sleep 0.5; echo > mark.txt\n    outs: [mark.txt]\n  \
         b:\n    cmd: ls in > b.txt\n    deps: [mark.txt, in]\n    outs: [b.txt]\n",
    );
    ws.write("in/ok.txt", "x");
    let fifo = ws.path("in/pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let t = Instant::now();
    let (code, out, err) = ws.run(&["run", "--keep-going", "-j", "2"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("a special file"), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the head waited for the slow step: {:?}",
        t.elapsed()
    );
    // `b` is planned after `mark` finished, by when `slow` has started.
    let pid = ws.job_pid(1);
    assert!(!alive(pid), "step 1 (pid {pid}) was left running");
    assert!(!ws.path("out.txt").exists());
    std::fs::remove_file(&fifo).unwrap();
    let v = ws.status_json();
    assert_eq!(v["last_run"]["status"], "failed", "{v}");
    let slow = &v["stages"][0];
    assert!(slow["running"].is_null(), "{slow}");
    assert_eq!(slow["last_step"]["status"], "interrupted", "{slow}");
    let why = slow["last_step"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("the run failed"), "{why}");
}

/// Reads `run --json`'s lines.
fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `run --json` tells the lifecycle as typed events: a step re-attached by
/// pid, a step stopped by a signal as `interrupted`, then the summary.
#[test]
fn run_json_tells_reattach_and_interruption_as_events() {
    let ws = Ws::new(
        "stages:\n  slow:\n    cmd: sleep $(cat delay); echo done > out.txt\n    outs: [out.txt]\n",
    );
    ws.write("delay", "1.5");
    let job = ws.orphan_first_step();
    let (code, out, err) = ws.run(&["run", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let ev = events(&out);
    let kinds: Vec<&str> = ev.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "note", "the lock take-over: {ev:?}");
    assert!(
        ev[0]["text"].as_str().unwrap().contains("took over"),
        "{ev:?}"
    );
    assert_eq!(ev[1]["event"], "reattached", "{ev:?}");
    assert_eq!(ev[1]["stage"], "slow");
    assert_eq!(ev[1]["step"], 1);
    assert_eq!(ev[1]["pid"], job);
    assert_eq!(ev.last().unwrap()["event"], "summary");
    assert_eq!(
        ev.last().unwrap()["interrupted_by"],
        serde_json::Value::Null
    );

    // A run stopped by SIGTERM: its step is `interrupted`, and the run says why.
    ws.write("delay", "30");
    let mut head = ws
        .cmd()
        .args(["run", "--force", "slow", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&ws.path(".pipeline/steps/2/pid"), 20);
    // SAFETY: signalling a child we started.
    unsafe { libc::kill(head.id() as i32, libc::SIGTERM) };
    let mut out = String::new();
    use std::io::Read;
    head.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(head.wait().unwrap().code(), Some(128 + libc::SIGTERM));
    let ev = events(&out);
    let kinds: Vec<&str> = ev.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["started", "stopping", "interrupted", "summary"],
        "{ev:?}"
    );
    assert_eq!(ev[0]["step"], 2);
    assert!(ev[0]["pid"].is_u64(), "a local step names its pid: {ev:?}");
    assert_eq!(ev[0]["reasons"][0]["reason"], "forced");
    assert_eq!(ev[1]["why"], "interrupted by SIGTERM");
    assert_eq!(ev[2]["step"], 2);
    assert_eq!(ev[2]["why"], "interrupted by SIGTERM");
    assert_eq!(ev[3]["interrupted_by"], libc::SIGTERM);
}
