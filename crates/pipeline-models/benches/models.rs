//! `cargo bench --bench models -- [--config FILE...] [--batch N] [--steps N]`:
//! the stage-2 training-step benchmark of `pipeline bench models`, runnable
//! without the CLI. Prints ms/step and peak RSS per configuration.

use clap::Parser;
use pipeline_models::bench::{run, BenchArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn main() -> anyhow::Result<()> {
    // cargo passes `--bench` to harness-less benchmarks.
    let argv = std::env::args().filter(|a| a != "--bench");
    run(Cli::parse_from(argv).args)
}
