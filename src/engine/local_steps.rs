//! The local executor of a run: each step a child process in its own
//! process group, within this machine's CPU and GPU slots.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::task::JoinSet;

use super::events::Event;
use super::executor::{Ctx, Executor, Launch, Launched, Settled};
use super::ingest::ingest;
use crate::exec::local::{local_gpus, signal_group, LocalExecutor, Slots};
use crate::exec::resources::Resources;
use crate::store::StepId;
use crate::util::process_start;

type Exit = (StepId, std::io::Result<std::process::ExitStatus>);

/// A local step's process and the slots it holds.
struct Child {
    pid: u32,
    cpus: usize,
    gpus: Vec<u32>,
}

pub struct LocalSteps {
    exec: LocalExecutor,
    tasks: JoinSet<Exit>,
    /// Exits seen by `ready`, recorded by the next `poll`.
    exited: Vec<Exit>,
    children: BTreeMap<StepId, Child>,
    total_cpus: usize,
    free_cpus: usize,
    total_gpus: usize,
    free_gpus: Vec<u32>,
}

impl LocalSteps {
    /// An executor with `cpus` threads to hand out and this machine's GPUs.
    pub fn new(root: &Path, cpus: usize) -> Result<LocalSteps> {
        let gpus = local_gpus();
        Ok(LocalSteps {
            exec: LocalExecutor::new(root)?,
            tasks: JoinSet::new(),
            exited: Vec::new(),
            children: BTreeMap::new(),
            total_cpus: cpus.max(1),
            free_cpus: cpus.max(1),
            total_gpus: gpus.len(),
            free_gpus: gpus,
        })
    }

    fn start(&mut self, cx: &Ctx<'_>, step: StepId, slots: &Slots) -> Result<u32> {
        let mut child = self.exec.spawn(step, &cx.ws.step_dir(step), slots)?;
        let pid = child.id().context("the step's process has no pid")?;
        self.tasks.spawn(async move { (step, child.wait().await) });
        Ok(pid)
    }

    /// Runs the gathering step of a sharded step whose shards all succeeded
    /// elsewhere, with every thread of this machine (it holds no slot: it
    /// merges what the shards wrote).
    pub fn gather(&mut self, cx: &Ctx<'_>, step: StepId) -> Result<u32> {
        let slots = Slots {
            threads: self.total_cpus,
            gpus: None,
        };
        let pid = self.start(cx, step, &slots)?;
        self.children.insert(
            step,
            Child {
                pid,
                cpus: 0,
                gpus: Vec::new(),
            },
        );
        Ok(pid)
    }
}

impl Executor for LocalSteps {
    fn threads(&self, r: &Resources) -> usize {
        (r.cpus as usize).min(self.total_cpus)
    }

    fn has_room(&self, r: &Resources) -> bool {
        let gpus = r.gpus as usize;
        self.threads(r) <= self.free_cpus && gpus.min(self.total_gpus) <= self.free_gpus.len()
    }

    async fn spawn(&mut self, cx: &Ctx<'_>, l: &Launch<'_>) -> Result<Launched> {
        let want = l.resources.gpus as usize;
        let have_gpus = self.total_gpus > 0;
        let gpus: Vec<u32> = if have_gpus {
            let n = want.min(self.free_gpus.len());
            self.free_gpus.drain(..n).collect()
        } else {
            if want > 0 {
                cx.rep.event(Event::Note {
                    text: format!(
                        "{} asks for {want} GPU(s) and this machine has none: it runs on the CPU",
                        l.stage
                    ),
                });
            }
            Vec::new()
        };
        let slots = Slots {
            threads: l.threads,
            gpus: have_gpus.then(|| gpus.clone()),
        };
        let pid = match self.start(cx, l.step, &slots) {
            Ok(pid) => pid,
            Err(e) => {
                self.free_gpus.extend(gpus);
                self.free_gpus.sort();
                return Err(e);
            }
        };
        self.free_cpus -= l.threads;
        self.children.insert(
            l.step,
            Child {
                pid,
                cpus: l.threads,
                gpus,
            },
        );
        cx.ws
            .store
            .step_started(l.step, Some(pid), process_start(pid))
            .await?;
        tracing::info!(
            stage = l.stage,
            step = l.step.0,
            pid,
            cpus = l.threads,
            "step started"
        );
        Ok(Launched {
            pid: Some(pid),
            slurm_job: None,
        })
    }

    fn busy(&self) -> bool {
        !self.tasks.is_empty() || !self.exited.is_empty()
    }

    async fn ready(&mut self) {
        if !self.exited.is_empty() {
            return;
        }
        // `join_next` is cancel-safe, and nothing awaits after it.
        match self.tasks.join_next().await {
            Some(Ok(exit)) => self.exited.push(exit),
            Some(Err(e)) => tracing::error!("a step's waiting task failed: {e}"),
            None => std::future::pending().await,
        }
    }

    async fn poll(&mut self, cx: &Ctx<'_>) -> Result<Vec<(StepId, Settled)>> {
        let mut out = Vec::new();
        for (step, exit) in std::mem::take(&mut self.exited) {
            if let Some(c) = self.children.remove(&step) {
                self.free_cpus += c.cpus;
                self.free_gpus.extend(c.gpus);
                self.free_gpus.sort();
            }
            out.push((
                step,
                Settled::Finished(ingest(cx.ws, step, exit.ok()).await?),
            ));
        }
        Ok(out)
    }

    /// SIGTERM to every step's process group, up to 5 s for them to exit,
    /// then SIGKILL to what is left.
    async fn cancel(&mut self) -> Vec<StepId> {
        for c in self.children.values() {
            signal_group(c.pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.tasks.is_empty() && Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(200), self.tasks.join_next()).await;
        }
        for c in self.children.values() {
            signal_group(c.pid, libc::SIGKILL);
        }
        self.exited.clear();
        std::mem::take(&mut self.children).into_keys().collect()
    }
}
