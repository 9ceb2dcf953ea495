//! Executors: the local one and the Slurm client. The job contract they run
//! (`job.json` in, `result.json` out, the `exec-step` runner) is
//! `pipeline-core`'s, re-exported here.

pub use pipeline_core::exec::{confine, job, redact, resources, step};

pub mod local;
pub mod slurm;

/// The kinds `pipeline` runs itself: the report and the download.
pub fn registry() -> Vec<Box<dyn crate::stages::Stage>> {
    let mut kinds = pipeline_report::registry();
    kinds.extend(pipeline_fetch::registry());
    kinds
}
