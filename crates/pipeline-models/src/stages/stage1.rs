//! The `stage1` kind: audio representation learning. Input `elements`, output
//! `model` (the network's weights, `metrics.json`, `history.jsonl`).

use anyhow::Result;

use crate::recipes::Stage1Params;
use crate::stage_run::{parse_params, run_stage1, StagePaths};
use pipeline_core::stages::{Stage, StageContext};

pub struct Stage1;

impl Stage for Stage1 {
    fn kind(&self) -> &'static str {
        "stage1"
    }

    /// 1: first version. 2: the output holds the per-clip scores
    /// (`scores.jsonl`).
    fn version(&self) -> u32 {
        2
    }

    fn check_params(&self, params: &serde_json::Value) -> Result<()> {
        pipeline_core::stages::check_params(self.kind(), params)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<()> {
        let params: Stage1Params = parse_params(ctx.stage, ctx.params)?;
        run_stage1(
            &params,
            &StagePaths {
                elements: ctx.input("elements")?,
                stage1: None,
                pretrained: None,
                out: ctx.output("model")?,
                work: ctx.step_dir,
                threads: ctx.threads,
                verbose: true,
            },
        )?;
        Ok(())
    }
}
