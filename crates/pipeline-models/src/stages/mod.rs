//! The model stage kinds, run by `pipeline-worker exec-step`: `pipeline`
//! hands a step of one of these kinds over to it. Each keeps its own code
//! version; the worker refuses a step the engine planned with another, and
//! `tests/worker_kinds.rs` compares this table with the engine's.

use pipeline_core::stages::Stage;

pub mod baseline;
pub mod stage1;
pub mod stage2;
pub mod sweep;

/// The kinds this program implements.
pub fn registry() -> Vec<Box<dyn Stage>> {
    vec![
        Box::new(stage1::Stage1),
        Box::new(stage2::Stage2),
        Box::new(baseline::Baseline),
        Box::new(sweep::Stage2Sweep),
    ]
}
