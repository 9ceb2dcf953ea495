//! The local executor: each step is a `pipeline exec-step` child process in
//! its own process group (so Ctrl-C can stop it and everything it started),
//! with its output going to the step's log file.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};
use tokio::process::{Child, Command};

use super::job::LOG_FILE;
use crate::store::StepId;

/// Which GPUs a step may use: `None` leaves `CUDA_VISIBLE_DEVICES` alone.
pub struct Slots {
    pub threads: usize,
    pub gpus: Option<Vec<u32>>,
}

pub struct LocalExecutor {
    pub exe: PathBuf,
    pub root: PathBuf,
}

impl LocalExecutor {
    pub fn new(root: &Path) -> Result<Self> {
        Ok(LocalExecutor {
            exe: std::env::current_exe().context("finding the pipeline binary")?,
            root: root.to_path_buf(),
        })
    }

    /// Starts step `id`; its stdout and stderr go to `<step dir>/log`.
    pub fn spawn(&self, id: StepId, step_dir: &Path, slots: &Slots) -> Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(step_dir.join(LOG_FILE))
            .with_context(|| format!("opening the log of step {id}"))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("exec-step")
            .arg(&self.root)
            .arg(id.0.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("RAYON_NUM_THREADS", slots.threads.to_string())
            .env("OMP_NUM_THREADS", slots.threads.to_string())
            .process_group(0)
            .kill_on_drop(false);
        if let Some(g) = &slots.gpus {
            let ids: Vec<String> = g.iter().map(|i| i.to_string()).collect();
            cmd.env("CUDA_VISIBLE_DEVICES", ids.join(","));
        }
        cmd.spawn().with_context(|| format!("starting step {id}"))
    }
}

/// Sends `sig` to the process group led by `pid`.
pub fn signal_group(pid: u32, sig: i32) {
    // SAFETY: kill with a negative pid signals a process group; no memory is touched.
    unsafe {
        libc::kill(-(pid as i32), sig);
    }
}

/// GPUs this machine offers: `CUDA_VISIBLE_DEVICES` when set, else those the
/// NVIDIA driver lists.
pub fn local_gpus() -> Vec<u32> {
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return v.split(',').filter_map(|s| s.trim().parse().ok()).collect();
    }
    std::fs::read_dir("/proc/driver/nvidia/gpus")
        .map(|rd| (0..rd.count() as u32).collect())
        .unwrap_or_default()
}
