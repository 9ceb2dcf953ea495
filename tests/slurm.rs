//! The Slurm executor against a real one-node Slurm (`scripts/slurm.sh up`,
//! started and stopped by `scripts/test.sh`). Where no cluster answers, CI
//! fails loudly; elsewhere each test says loudly that it skipped.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Ws;

/// The test cluster has as many CPUs as this machine (two in CI): tests that
/// hold a CPU for a minute would queue behind each other and trip their
/// waits, so they take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn slurm_ws(yaml: &str) -> Ws {
    let ws = Ws::new(yaml);
    ws.write(
        "cluster.yaml",
        "poll_min_s: 0.3\npoll_max_s: 1.5\nresult_wait_s: 5\nmax_retries: 1\n",
    );
    ws
}

fn run_slurm(ws: &Ws, extra: &[&str]) -> (i32, String) {
    let cluster = ws.path("cluster.yaml");
    let mut args = vec![
        "run",
        "--executor",
        "slurm",
        "--cluster",
        cluster.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = ws.run(&args);
    (code, format!("{out}{err}"))
}

/// Starts `pipeline run --executor slurm` in the background.
fn spawn_slurm_run(ws: &Ws) -> std::process::Child {
    spawn_slurm_run_to(ws, std::process::Stdio::null())
}

/// The same, its stderr (where the head reports) going to `stderr`.
fn spawn_slurm_run_to(ws: &Ws, stderr: std::process::Stdio) -> std::process::Child {
    ws.cmd()
        .args(["run", "--executor", "slurm", "--cluster"])
        .arg(ws.path("cluster.yaml"))
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// The jobs named `name` that ran in `ws` (finished ones included, while
/// Slurm still lists them), as (job id, state). Filtering on the working
/// folder keeps jobs of earlier runs against the same cluster out.
fn squeue_by_name(ws: &Ws, name: &str) -> Vec<(String, String)> {
    let o = Command::new("squeue")
        .args([
            "--noheader",
            "--states=all",
            "--format=%i|%T|%Z",
            &format!("--name={name}"),
        ])
        .output()
        .unwrap();
    let root = std::fs::canonicalize(ws.path(".")).unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split('|').map(str::trim);
            let (id, st, dir) = (f.next()?, f.next()?, f.next()?);
            (std::fs::canonicalize(dir).ok()? == root).then(|| (id.to_string(), st.to_string()))
        })
        .collect()
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The Slurm state the head last recorded for the first stage's running step
/// (SUBMITTED before its first poll).
fn ws_state(ws: &Ws) -> serde_json::Value {
    let v = ws.status_json();
    let running = &v["stages"][0]["running"];
    assert!(running.is_object(), "no running step: {v}");
    running["slurm_state"].clone()
}

/// A stage `name` whose command waits on its first attempt and writes
/// "second" on its second, run through Slurm by a head whose stderr is kept;
/// returns once the first attempt runs, with its (job id, state).
struct TwoAttempts {
    ws: Ws,
    head: std::process::Child,
    first: (String, String),
}

impl TwoAttempts {
    /// `first_poll_s`: how long the head waits before its first poll
    /// (the test cluster's usual 0.3 s when `None`).
    fn start(name: &str, wait_s: u32, resources: &str, first_poll_s: Option<f64>) -> Self {
        let ws = slurm_ws(&format!(
            "stages:\n  {name}:\n    cmd: if [ -f attempt ]; then echo second > out.txt; else touch attempt; sleep {wait_s}; echo first > out.txt; fi\n    outs: [out.txt]\n{resources}"
        ));
        if let Some(p) = first_poll_s {
            ws.write(
                "cluster.yaml",
                &format!("poll_min_s: {p}\npoll_max_s: {p}\nresult_wait_s: 5\nmax_retries: 1\n"),
            );
        }
        let head = spawn_slurm_run_to(&ws, std::process::Stdio::piped());
        wait_until("the first attempt to start", 60, || {
            ws.path("attempt").exists()
        });
        let jobs = squeue_by_name(&ws, &format!("pipeline.{name}.1"));
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        let first = jobs.into_iter().next().unwrap();
        Self { ws, head, first }
    }

    /// Waits for the head: it must succeed with the second attempt's output.
    /// Returns its stderr and the step's record.
    fn finish(self) -> (Ws, String, serde_json::Value) {
        let out = self.head.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        assert_eq!(self.ws.read("out.txt"), "second\n");
        let step = self.ws.status_json()["stages"][0]["last_step"].clone();
        assert_eq!(step["status"], "succeeded", "{step}");
        (self.ws, err, step)
    }
}

#[test]
fn command_stages_run_through_sbatch_and_record_their_jobs() {
    if !common::slurm_cluster() {
        return;
    }
    let _turn = take_turn();
    let ws = slurm_ws(
        "stages:\n  one:\n    cmd: echo \"$SLURM_JOB_ID\" > one.txt\n    outs: [one.txt]\n  \
         two:\n    cmd: cat one.txt > two.txt; hostname >> two.txt\n    deps: [one.txt]\n    outs: [two.txt]\n",
    );
    let (code, out) = run_slurm(&ws, &[]);
    assert_eq!(code, 0, "{out}");
    let job_in_file = ws.read("one.txt").trim().to_string();
    assert!(
        job_in_file.chars().all(|c| c.is_ascii_digit()) && !job_in_file.is_empty(),
        "ran inside a Slurm job: {job_in_file:?}"
    );
    let v = ws.status_json();
    let s0 = &v["stages"][0];
    assert_eq!(s0["state"], "up_to_date");
    assert_eq!(s0["last_step"]["executor"], "slurm");
    assert_eq!(s0["last_step"]["slurm_job_id"], job_in_file.as_str());
    assert_eq!(s0["last_step"]["slurm_state"], "COMPLETED");
    let calls = v["last_run"]["slurm_calls"].as_i64().unwrap();
    assert!(
        calls >= 4,
        "two sbatch calls and at least one poll each: {calls}"
    );
    let lineage = ws.ok(&["lineage", "two.txt"]);
    assert!(lineage.contains("via slurm job"), "{lineage}");
    // `pipeline log` shows the job's own output file.
    let (_, log, _) = ws.run(&["log", "one"]);
    assert!(log.is_empty() || !log.contains("error"), "{log}");
    // Nothing is stale: a second run submits nothing.
    let (code, out) = run_slurm(&ws, &[]);
    assert_eq!(code, 0);
    assert!(Ws::ran(&out).is_empty(), "{out}");
}

#[test]
fn paths_with_spaces_and_quotes_never_become_shell_code() {
    if !common::slurm_cluster() {
        return;
    }
    let _turn = take_turn();
    let parent = tempfile::tempdir().unwrap();
    let odd = parent.path().join("work space 'quoted' $(touch pwned)");
    std::fs::create_dir_all(&odd).unwrap();
    let yaml = "stages:\n  odd-name.v2:\n    cmd: mkdir -p \"out dir\" && echo ok > \"out dir/it's.txt\"\n    params: [p]\n    outs: [\"out dir/it's.txt\"]\n";
    std::fs::write(odd.join("pipeline.yaml"), yaml).unwrap();
    std::fs::write(
        odd.join("params.yaml"),
        "p: \"$(touch pwned2); `touch pwned3`\"\n",
    )
    .unwrap();
    std::fs::write(
        odd.join("cluster.yaml"),
        "poll_min_s: 0.3\npoll_max_s: 1.5\nresult_wait_s: 5\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .current_dir(parent.path())
        .arg("-f")
        .arg(odd.join("pipeline.yaml"))
        .arg("-w")
        .arg(&odd)
        .args(["run", "--executor", "slurm", "--cluster"])
        .arg(odd.join("cluster.yaml"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(odd.join("out dir/it's.txt")).unwrap(),
        "ok\n"
    );
    for dir in [parent.path(), odd.as_path()] {
        for f in ["pwned", "pwned2", "pwned3"] {
            assert!(
                !dir.join(f).exists(),
                "{f} was created in {}: a value became shell code",
                dir.display()
            );
        }
    }
    let script = std::fs::read_to_string(odd.join(".pipeline/steps/1/job.sbatch")).unwrap();
    let last = script.lines().last().unwrap();
    assert!(
        last.contains("'\\''quoted'\\''"),
        "the workspace path is single-quoted: {last}"
    );
}

#[test]
fn a_failing_job_and_a_job_past_its_time_limit_are_told_apart() {
    if !common::slurm_cluster() {
        return;
    }
    let _turn = take_turn();
    let ws = slurm_ws(
        "stages:\n  bad:\n    cmd: echo boom >&2; exit 3\n    outs: [bad.txt]\n  \
         slow:\n    cmd: sleep 300; echo > slow.txt\n    outs: [slow.txt]\n    resources: {time: 1}\n",
    );
    let (code, out) = run_slurm(&ws, &["--keep-going"]);
    assert_eq!(code, 1, "{out}");
    let v = ws.status_json();
    let bad = &v["stages"][0]["last_step"];
    assert_eq!(bad["status"], "failed");
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("exited with status 3"),
        "{bad}"
    );
    let (_, log, _) = ws.run(&["log", "bad"]);
    assert!(log.contains("boom"), "{log}");
    let slow = &v["stages"][1]["last_step"];
    assert_eq!(slow["status"], "failed");
    assert_eq!(slow["slurm_state"], "TIMEOUT", "{slow}");
    assert!(
        slow["error"].as_str().unwrap().contains("time limit"),
        "{slow}"
    );
}

#[test]
fn a_requeued_job_is_followed_to_its_end() {
    if !common::slurm_cluster() {
        return;
    }
    let _turn = take_turn();
    // The head's first poll comes after the requeue: it never sees the job
    // running, and still tells the requeue (the job's pid file changed).
    let run = TwoAttempts::start("twice", 60, "", Some(15.0));
    let job = run.first.0.clone();
    let seen = ws_state(&run.ws);
    assert_eq!(seen, "SUBMITTED", "the head polled already");
    let st = Command::new("scontrol")
        .args(["requeue", &job])
        .status()
        .unwrap();
    assert!(st.success());
    let (_ws, err, step) = run.finish();
    assert!(
        err.contains(&format!("Slurm put job {job} back in the queue")),
        "{err}"
    );
    assert!(err.contains(&format!("Slurm requeued job {job}")), "{err}");
    assert_eq!(step["attempts"], 2, "{step}");
    assert_eq!(
        step["slurm_job_id"],
        job.as_str(),
        "the same job, requeued by Slurm"
    );
}

#[test]
fn a_requeue_while_no_head_runs_is_counted_after_re_attaching() {
    if !common::slurm_cluster() {
        return;
    }
    let _turn = take_turn();
    // The head dies while the first attempt runs; Slurm then requeues the
    // job. The next head re-attaches to the queued job, follows it through
    // its second start and counts that start as an attempt.
    let mut run = TwoAttempts::start("orphan", 60, "", None);
    let job = run.first.0.clone();
    run.head.kill().unwrap();
    run.head.wait().unwrap();
    let st = Command::new("scontrol")
        .args(["requeue", &job])
        .status()
        .unwrap();
    assert!(st.success());
    let (code, out) = run_slurm(&run.ws, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("re-attaching to step 1 (orphan), Slurm job"),
        "{out}"
    );
    assert!(out.contains(&format!("Slurm requeued job {job}")), "{out}");
    assert!(Ws::ran(&out).is_empty(), "nothing submitted again: {out}");
    assert_eq!(run.ws.read("out.txt"), "second\n");
    let step = run.ws.status_json()["stages"][0]["last_step"].clone();
    assert_eq!(step["status"], "succeeded", "{step}");
    assert_eq!(step["attempts"], 2, "{step}");
    assert_eq!(step["slurm_job_id"], job.as_str(), "{step}");
}

#[test]
fn a_preempted_job_is_resubmitted_within_the_retry_limit() {
    if !common::slurm_cluster() {
        return;
    }
    let _turn = take_turn();
    // The step holds every CPU of the node; a job of the `urgent` partition
    // (higher priority tier, PreemptMode=CANCEL) preempts it.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let run = TwoAttempts::start(
        "hog",
        120,
        &format!("    resources: {{cpus: {cpus}}}\n"),
        None,
    );
    let first = run.first.0.clone();
    let urgent = Command::new("sbatch")
        .args([
            "--parsable",
            "--partition=urgent",
            "--job-name=pipeline-test-urgent",
            &format!("--cpus-per-task={cpus}"),
            "--mem=64M",
            "--output=/dev/null",
            "--wrap=sleep 2",
        ])
        .output()
        .unwrap();
    assert!(
        urgent.status.success(),
        "{}",
        String::from_utf8_lossy(&urgent.stderr)
    );
    let (ws, err, step) = run.finish();
    assert!(err.contains("ended PREEMPTED; resubmitted as job"), "{err}");
    assert_eq!(step["attempts"], 2, "{step}");
    assert_ne!(step["slurm_job_id"], first.as_str(), "a new job: {step}");
    let states = squeue_by_name(&ws, "pipeline.hog.1");
    assert!(
        states
            .iter()
            .any(|(id, st)| *id == first && st == "PREEMPTED"),
        "{states:?}"
    );
}

#[test]
fn a_job_killed_for_its_memory_is_recorded_as_out_of_memory() {
    if !common::slurm_cluster() {
        return;
    }
    let _turn = take_turn();
    // dd holds a 1 GiB buffer; the job asked for 300 MB. Where the test
    // cluster has cgroup memory limits (scripts/slurm.sh), the kernel kills it
    // and Slurm says OUT_OF_MEMORY; without them it is killed as sites without
    // cgroups do (OverMemoryKill): the job ends FAILED and only its log says
    // why. Either way the step is recorded OUT_OF_MEMORY.
    let cgroups = Command::new("scontrol")
        .args(["show", "config"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("task/cgroup"))
        .unwrap_or(false);
    println!(
        "--mem enforced by {}",
        if cgroups { "cgroups" } else { "polling" }
    );
    let ws = slurm_ws(
        "stages:\n  greedy:\n    cmd: dd if=/dev/zero of=/dev/null bs=1G count=200 && touch big.txt\n    outs: [big.txt]\n    resources: {mem: 300M}\n",
    );
    let (code, out) = run_slurm(&ws, &[]);
    assert_ne!(code, 0, "{out}");
    let step = &ws.status_json()["stages"][0]["last_step"];
    assert_eq!(step["status"], "failed", "{step}");
    assert_eq!(step["slurm_state"], "OUT_OF_MEMORY", "{step}");
    let error = step["error"].as_str().unwrap();
    assert!(error.contains("ran out of memory"), "{error}");
    assert!(error.contains("resources: mem"), "{error}");
    assert!(!ws.path("big.txt").exists());
    let (_, status, _) = ws.run(&["status"]);
    assert!(status.contains("OUT_OF_MEMORY"), "{status}");
    // Slurm's own word for the job, told apart from the head's reading.
    let slurm_says = squeue_by_name(&ws, "pipeline.greedy.1");
    let want = if cgroups { "OUT_OF_MEMORY" } else { "FAILED" };
    assert!(
        slurm_says.iter().any(|(_, st)| st == want),
        "{slurm_says:?}"
    );
}

/// Brings the test cluster's node back, however the test using it ends.
struct ResumeNode;

impl Drop for ResumeNode {
    fn drop(&mut self) {
        let _ = Command::new("scontrol")
            .args(["update", "nodename=localhost", "state=resume"])
            .status();
    }
}

fn node_state() -> String {
    let o = Command::new("sinfo")
        .args(["-h", "-n", "localhost", "-o", "%T"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn a_job_on_a_failed_node_runs_again_and_the_step_succeeds() {
    if !common::slurm_cluster() {
        return;
    }
    let _turn = take_turn();
    let run = TwoAttempts::start("fragile", 120, "", None);
    let first = run.first.0.clone();
    let ws = &run.ws;
    // The node fails under the running job (as a node the controller loses
    // does), then comes back.
    let resume = ResumeNode;
    let st = Command::new("scontrol")
        .args([
            "update",
            "nodename=localhost",
            "state=down",
            "reason=pipeline-test-node-failure",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    wait_until("the job to leave the failed node", 60, || {
        squeue_by_name(ws, "pipeline.fragile.1")
            .iter()
            .all(|(_, st)| st != "RUNNING")
    });
    drop(resume);
    wait_until("the node to come back", 60, || {
        matches!(node_state().as_str(), "idle" | "mixed" | "allocated")
    });
    let (_ws, err, step) = run.finish();
    // Slurm requeues a batch job whose node failed (JobRequeue=1, the
    // default): the head follows the same job to its second start. Where a
    // site sets JobRequeue=0 the job ends NODE_FAIL and the head resubmits.
    assert!(
        err.contains(&format!("Slurm requeued job {first}"))
            || err.contains("ended NODE_FAIL; resubmitted as job"),
        "{err}"
    );
    assert_eq!(step["attempts"], 2, "{step}");
}

#[test]
fn ctrl_c_cancels_the_jobs_and_a_killed_head_reattaches() {
    if !common::slurm_cluster() {
        return;
    }
    let _turn = take_turn();
    // Ctrl-C: the job is cancelled and the step recorded as interrupted.
    let ws = slurm_ws("stages:\n  long:\n    cmd: touch started; sleep 120; echo > long.txt\n    outs: [long.txt]\n");
    let mut head = spawn_slurm_run(&ws);
    wait_until("the job to start", 60, || ws.path("started").exists());
    // SAFETY: signalling a child we started.
    unsafe { libc::kill(head.id() as i32, libc::SIGINT) };
    assert_eq!(head.wait().unwrap().code(), Some(130));
    let job = ws.status_json()["stages"][0]["last_step"]["slurm_job_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until("the job to be cancelled", 30, || {
        squeue_by_name(&ws, "pipeline.long.1")
            .iter()
            .all(|(id, st)| *id != job || st == "CANCELLED")
    });
    assert_eq!(
        ws.status_json()["stages"][0]["last_step"]["status"],
        "interrupted"
    );

    // With --detach, SIGTERM stops the head and leaves the job running,
    // recorded as running; the next run re-attaches to it.
    let ws = slurm_ws("stages:\n  kept:\n    cmd: touch started; sleep 4; echo done > kept.txt\n    outs: [kept.txt]\n");
    let head = ws
        .cmd()
        .args(["run", "--detach", "--executor", "slurm", "--cluster"])
        .arg(ws.path("cluster.yaml"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the job to start", 60, || ws.path("started").exists());
    // SAFETY: signalling a child we started.
    unsafe { libc::kill(head.id() as i32, libc::SIGTERM) };
    let out = head.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("--detach: left Slurm jobs"), "{err}");
    let job = ws.status_json()["stages"][0]["running"]["slurm_job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("not recorded as running: {err}"))
        .to_string();
    assert!(
        squeue_by_name(&ws, "pipeline.kept.1")
            .iter()
            .any(|(id, st)| *id == job && st != "CANCELLED"),
        "the job was cancelled"
    );
    let (code, out) = run_slurm(&ws, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("re-attaching to step 1 (kept)"), "{out}");
    assert_eq!(ws.read("kept.txt"), "done\n");

    // SIGKILL of the head: the next run re-attaches; the job is submitted once.
    let ws = slurm_ws("stages:\n  mid:\n    cmd: touch started; sleep 4; echo done > mid.txt\n    outs: [mid.txt]\n");
    let mut head = spawn_slurm_run(&ws);
    wait_until("the job to start", 60, || ws.path("started").exists());
    head.kill().unwrap();
    head.wait().unwrap();
    let (code, out) = run_slurm(&ws, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("re-attaching to step 1 (mid), Slurm job"),
        "{out}"
    );
    assert!(
        Ws::ran(&out).is_empty(),
        "nothing was submitted again: {out}"
    );
    assert_eq!(ws.read("mid.txt"), "done\n");
    let jobs = squeue_by_name(&ws, "pipeline.mid.1");
    assert_eq!(jobs.len(), 1, "submitted exactly once: {jobs:?}");
    assert_eq!(
        ws.status_json()["stages"][0]["last_step"]["status"],
        "succeeded"
    );
}

const SHARDED: &str = r#"
stages:
  parts:
    cmd: >-
      if [ -n "$PIPELINE_SHARD" ]; then
        echo "part $PIPELINE_SHARD of $PIPELINE_SHARDS" > "$PIPELINE_ITEMS_DIR/part-$PIPELINE_SHARD";
      else
        i=0; while [ $i -lt 8 ]; do
          [ -f "$PIPELINE_ITEMS_DIR/part-$i" ] || echo "part $i of 8" > "$PIPELINE_ITEMS_DIR/part-$i"; i=$((i+1));
        done;
        cat "$PIPELINE_ITEMS_DIR"/part-* > parts.txt;
      fi
    outs: [parts.txt]
    shards: 8
"#;

#[test]
fn a_sharded_stage_is_one_array_job_and_matches_a_local_run() {
    if !common::slurm_cluster() {
        return;
    }
    let _turn = take_turn();
    let local = Ws::new(SHARDED);
    local.ok(&["run"]);
    let ws = slurm_ws(SHARDED);
    let (code, out) = run_slurm(&ws, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("every shard finished; gathering here"),
        "{out}"
    );
    assert_eq!(ws.read("parts.txt"), local.read("parts.txt"));
    let tasks = squeue_by_name(&ws, "pipeline.parts.1");
    assert_eq!(tasks.len(), 8, "one array of 8 tasks: {tasks:?}");
    let base: std::collections::BTreeSet<&str> = tasks
        .iter()
        .map(|(id, _)| id.split('_').next().unwrap())
        .collect();
    assert_eq!(base.len(), 1, "all tasks belong to one job: {tasks:?}");
    for i in 0..8 {
        assert!(ws
            .path(&format!(".pipeline/steps/1/result.shard-{i}.json"))
            .exists());
    }
    let script = ws.read(".pipeline/steps/1/job.sbatch");
    assert!(
        script.contains("--shard \"$SLURM_ARRAY_TASK_ID\""),
        "{script}"
    );
    // The lineage export names each shard a run of its own, child of the step.
    let events: Vec<serde_json::Value> = ws
        .ok(&["lineage", "export", "--format", "openlineage"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let step_run = events
        .iter()
        .find(|e| e["job"]["name"] == "parts" && e["eventType"] == "COMPLETE")
        .map(|e| e["run"]["runId"].clone())
        .unwrap();
    let shard_ends: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| {
            e["job"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("parts.shard-"))
                && e["eventType"] == "COMPLETE"
        })
        .collect();
    assert_eq!(shard_ends.len(), 8, "{events:?}");
    for e in shard_ends {
        assert_eq!(e["run"]["facets"]["parent"]["run"]["runId"], step_run);
    }
}

/// Each array task's progress (here written by the command itself into its
/// shard folder) is summed into the step's, as `status` and the head show it.
#[test]
fn the_progress_of_an_array_job_is_the_sum_of_its_shards() {
    if !common::slurm_cluster() {
        return;
    }
    let _turn = take_turn();
    let ws = slurm_ws(
        r#"
stages:
  counted:
    cmd: >-
      if [ -n "$PIPELINE_SHARD" ]; then
        printf '{"done":%d,"failed":0,"total":5,"elapsed_ms":1000}' "$((PIPELINE_SHARD + 1))" > "$PIPELINE_STEP_DIR/progress.json";
        touch "started-$PIPELINE_SHARD"; while [ ! -f go ]; do sleep 0.2; done;
      else
        echo done > counted.txt;
      fi
    outs: [counted.txt]
    shards: 2
"#,
    );
    let head = spawn_slurm_run_to(&ws, std::process::Stdio::piped());
    wait_until("both shards to start", 90, || {
        ws.path("started-0").exists() && ws.path("started-1").exists()
    });
    let running = ws.status_json()["stages"][0]["running"].clone();
    assert_eq!(running["progress"]["done"], 3, "{running}");
    assert_eq!(running["progress"]["total"], 10, "{running}");
    // The head shows it within its 2-second tick.
    std::thread::sleep(Duration::from_secs(3));
    ws.write("go", "");
    let out = head.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("progress    counted: 3 of 10 items"), "{err}");
    assert_eq!(ws.read("counted.txt"), "done\n");
}
