//! Shared fixtures: a temporary workspace with a pipeline file, and the real
//! `pipeline` binary run as a child process.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `pipeline` binary under test. This module serves the tests of every
/// package: the engine's own (which cargo hands the path) and those of the
/// worker and the media crates, whose `pipeline` is the one built beside
/// their program in the same target folder (`cargo test --workspace` builds
/// them all).
pub fn pipeline_exe() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_pipeline") {
        return PathBuf::from(p);
    }
    let Some(beside) = option_env!("CARGO_BIN_EXE_pipeline-worker")
        .or(option_env!("CARGO_BIN_EXE_pipeline-media"))
    else {
        panic!("tests/common serves the tests of the workspace's packages only");
    };
    let exe = PathBuf::from(beside).with_file_name("pipeline");
    assert!(
        exe.exists(),
        "{} is missing: run the worker's tests with `cargo test --workspace`, which builds it",
        exe.display()
    );
    exe
}

/// Runs the program `exe` (a `pipeline`) on the workspace `ws` with its
/// `pipeline.yaml`; returns whether it succeeded and stdout + stderr.
pub fn run_program(exe: &Path, ws: &Path, args: &[&str]) -> (bool, String) {
    let o = Command::new(exe)
        .arg("-f")
        .arg(ws.join("pipeline.yaml"))
        .arg("-w")
        .arg(ws)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

pub struct Ws {
    pub dir: tempfile::TempDir,
}

impl Ws {
    pub fn new(pipeline_yaml: &str) -> Ws {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("pipeline.yaml"), pipeline_yaml).unwrap();
        Ws { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(pipeline_exe());
        c.arg("-f")
            .arg(self.path("pipeline.yaml"))
            .arg("-w")
            .arg(self.root());
        c.env_remove("CUDA_VISIBLE_DEVICES");
        c
    }

    /// Runs the binary with `args`; returns (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let o: Output = self.cmd().args(args).output().expect("running pipeline");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// Runs and asserts success; returns stderr (where progress goes).
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(
            code, 0,
            "pipeline {args:?} failed\nstdout:\n{out}\nstderr:\n{err}"
        );
        format!("{out}{err}")
    }

    /// Starts `run`, kills its head (SIGKILL) once step 1 has a process and
    /// returns that process's pid: the step goes on without a head.
    pub fn orphan_first_step(&self) -> u32 {
        let mut head = self
            .cmd()
            .arg("run")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for(&self.path(".pipeline/steps/1/pid"), 20);
        head.kill().unwrap();
        head.wait().unwrap();
        self.job_pid(1)
    }

    /// The pid of step `step`'s job, from its pid file.
    pub fn job_pid(&self, step: u32) -> u32 {
        let text = self.read(&format!(".pipeline/steps/{step}/pid"));
        text.split_whitespace().next().unwrap().parse().unwrap()
    }

    pub fn status_json(&self) -> serde_json::Value {
        let (code, out, err) = self.run(&["status", "--json"]);
        assert_eq!(code, 0, "status failed: {err}");
        serde_json::from_str(&out).unwrap()
    }

    /// Stage name -> (state, reasons as text).
    pub fn status(&self) -> Vec<(String, String, Vec<String>)> {
        let v = self.status_json();
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["stage"].as_str().unwrap().to_string(),
                    s["state"].as_str().unwrap().to_string(),
                    s["why"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|w| w.as_str().unwrap().to_string())
                        .collect(),
                )
            })
            .collect()
    }

    /// The stages a `run` started, from its progress lines.
    pub fn ran(output: &str) -> Vec<String> {
        output
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("start"))
            .map(|l| l.trim().split(' ').next().unwrap().to_string())
            .collect()
    }
}

/// Waits (at most `secs` seconds) for `path` to appear.
pub fn wait_for(path: &Path, secs: u64) {
    let t = std::time::Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(secs),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether process `pid` exists.
pub fn alive(pid: u32) -> bool {
    pipeline::util::process_start(pid).is_some()
}

/// Whether a Slurm cluster answers (`scripts/slurm.sh up`). Where none does,
/// CI fails loudly; elsewhere the caller's test says loudly that it skipped.
pub fn slurm_cluster() -> bool {
    let up = std::env::var_os("SLURM_CONF").is_some()
        && std::process::Command::new("sinfo")
            .arg("-h")
            .output()
            .is_ok_and(|o| o.status.success());
    if !up {
        if std::env::var_os("CI").is_some() {
            panic!("no Slurm cluster answers (SLURM_CONF unset or sinfo failing): scripts/test.sh starts one with scripts/slurm.sh up");
        }
        eprintln!(
            "SKIPPED: no Slurm cluster answers; run `eval $(scripts/slurm.sh up)` as root first"
        );
    }
    up
}
