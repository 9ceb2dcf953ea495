//! The `baseline` kind: OpenAVFF fine-tuning. Input `elements` and, optionally,
//! `pretrained` (the OpenAVFF pre-training checkpoint as safetensors); output `model`.

use anyhow::Result;

use crate::recipes::BaselineParams;
use crate::stage_run::{parse_params, run_baseline, StagePaths};
use pipeline_core::stages::{Stage, StageContext};

pub struct Baseline;

impl Stage for Baseline {
    fn kind(&self) -> &'static str {
        "baseline"
    }

    /// 1: first version. 2: a `recipe` given in part merges with the
    /// stage's own defaults (it fell back to the generic recipe's). 3: the
    /// output holds the per-clip scores (`scores.jsonl`).
    fn version(&self) -> u32 {
        3
    }

    fn check_params(&self, params: &serde_json::Value) -> Result<()> {
        pipeline_core::stages::check_params(self.kind(), params)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<()> {
        let params: BaselineParams = parse_params(ctx.stage, ctx.params)?;
        run_baseline(
            &params,
            &StagePaths {
                elements: ctx.input("elements")?,
                stage1: None,
                pretrained: ctx.inputs.get("pretrained").map(|p| p.as_path()),
                out: ctx.output("model")?,
                work: ctx.step_dir,
                threads: ctx.threads,
                verbose: true,
            },
        )?;
        Ok(())
    }
}
