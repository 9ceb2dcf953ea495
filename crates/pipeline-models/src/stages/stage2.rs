//! The `stage2` kind: the directionality-aware detector. Inputs `elements`,
//! `stage1` (the stage-1 output folder) and, optionally, `marlin` (pretrained
//! MARLIN weights as safetensors); output `model`.

use anyhow::Result;

use crate::recipes::Stage2Params;
use crate::stage_run::{parse_params, run_stage2, StagePaths};
use pipeline_core::stages::{Stage, StageContext};

pub struct Stage2;

impl Stage for Stage2 {
    fn kind(&self) -> &'static str {
        "stage2"
    }

    /// 1: first version. 2: a `recipe` given in part merges with the
    /// stage's own defaults (it fell back to the generic recipe's). 3: the
    /// output holds the per-clip scores (`scores.jsonl`); `fusion_refit`.
    fn version(&self) -> u32 {
        3
    }

    fn check_params(&self, params: &serde_json::Value) -> Result<()> {
        pipeline_core::stages::check_params(self.kind(), params)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<()> {
        let params: Stage2Params = parse_params(ctx.stage, ctx.params)?;
        run_stage2(
            &params,
            &StagePaths {
                elements: ctx.input("elements")?,
                stage1: Some(ctx.input("stage1")?),
                pretrained: ctx.inputs.get("marlin").map(|p| p.as_path()),
                out: ctx.output("model")?,
                work: ctx.step_dir,
                threads: ctx.threads,
                verbose: true,
            },
        )?;
        Ok(())
    }
}
