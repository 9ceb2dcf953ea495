//! What the training tests share: where a stage reads and writes, and the
//! tiny audio encoder they train.
// Each test file uses what it needs of this module.
#![allow(dead_code)]

use std::path::Path;

use pipeline_models::stage_run::StagePaths;

/// A stage reading `elements` (and stage 1's output folder, for stage 2),
/// writing `out`, checkpointing in `work`, on two threads, saying each epoch.
pub fn paths<'a>(
    elements: &'a Path,
    stage1: Option<&'a Path>,
    out: &'a Path,
    work: &'a Path,
) -> StagePaths<'a> {
    StagePaths {
        elements,
        stage1,
        pretrained: None,
        out,
        work,
        threads: 2,
        verbose: true,
    }
}

/// A stage-1 encoder small enough to train in seconds.
pub fn tiny_audio() -> serde_json::Value {
    serde_json::json!({"d_model": 32, "proj_dim": 16, "layers": 1, "nhead": 2, "dim_feedforward": 64})
}
