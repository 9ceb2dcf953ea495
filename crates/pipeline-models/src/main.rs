//! `pipeline-worker`: the program that links libtorch. It runs the steps of
//! the model stage kinds (`pipeline exec-step` hands them over), and the
//! model commands `pipeline model ...` and `pipeline bench models` forward to
//! it. Users never call it by name.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use pipeline_core::exec::job::StepId;

#[derive(Parser)]
#[command(name = "pipeline-worker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one step of a model kind as a job (what `pipeline exec-step` hands over).
    #[command(hide = true)]
    ExecStep {
        workspace: PathBuf,
        step: i64,
        /// Run only this shard (a Slurm array task).
        #[arg(long)]
        shard: Option<u32>,
    },
    /// Run the networks directly (parity checks at any size).
    Model {
        #[command(subcommand)]
        cmd: ModelCmd,
    },
    /// Score the clips of an element folder with a stage-2 model (what
    /// `pipeline detect` runs after cutting the elements).
    Detect(pipeline_models::detect::DetectArgs),
    /// Print benchmark numbers.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
    /// The stage kinds this program implements, with their code versions.
    #[command(hide = true)]
    Kinds,
}

#[derive(Subcommand)]
enum ModelCmd {
    /// One forward pass in eval mode, writing every named output.
    Forward(pipeline_models::forward::ForwardArgs),
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Training steps of a stage's network: ms per step and peak memory.
    Models(pipeline_models::bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::ExecStep {
            workspace,
            step,
            shard,
        } => pipeline_core::exec::step::exec_step(
            &workspace,
            StepId(step),
            shard,
            pipeline_models::stages::registry,
        )
        .map_err(|e| e.context("pipeline-worker exec-step")),
        Cmd::Model {
            cmd: ModelCmd::Forward(a),
        } => pipeline_models::forward::run(a).map(|_| 0),
        Cmd::Detect(a) => pipeline_models::detect::run(a),
        Cmd::Bench {
            what: BenchCmd::Models(a),
        } => pipeline_models::bench::run(a).map(|_| 0),
        Cmd::Kinds => {
            pipeline_core::exec::step::kinds_json(pipeline_models::stages::registry).map(|t| {
                println!("{t}");
                0
            })
        }
    };
    pipeline_core::exec::step::exit_with(result)
}
