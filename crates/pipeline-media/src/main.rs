//! `pipeline-media`: the program that links FFmpeg. It runs the steps of the
//! media stage kinds (synth, seedvc, elements, shortcut_audit,
//! voxceleb_subset: `pipeline exec-step` hands them over), the demo's voice
//! converter (`vc-standin`) and the element commands; `pipeline elements
//! ...`, `pipeline vc-standin` and `pipeline bench elements` forward to it.
//! Users never call it by name.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use pipeline_core::exec::job::StepId;

#[derive(Parser)]
#[command(name = "pipeline-media", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one step of a media kind as a job (what `pipeline exec-step` hands over).
    #[command(hide = true)]
    ExecStep {
        /// The workspace holding the step.
        workspace: PathBuf,
        /// The step's id.
        step: i64,
        /// Run only this shard (a Slurm array task).
        #[arg(long)]
        shard: Option<u32>,
    },
    /// Convert a voice as Seed-VC's CLI does (the demo's stand-in converter).
    VcStandin(pipeline_media::stages::vc_standin::VcStandinArgs),
    /// Look at element files.
    Elements {
        #[command(subcommand)]
        cmd: pipeline_media::stages::elements_inspect::ElementsCommand,
    },
    /// Print benchmark numbers.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
    /// The stage kinds this program implements, with their code versions.
    #[command(hide = true)]
    Kinds,
    /// Probe a corpus and plan its split for `pipeline check` (JSON on stdout).
    #[command(hide = true)]
    CheckCorpus(pipeline_media::stages::check_corpus::CheckCorpusArgs),
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Element extraction: clips per second beside the ffmpeg CLI's decode floor.
    Elements(pipeline_media::stages::elements_bench::BenchElementsArgs),
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
            pipeline_media::stages::registry,
        )
        .map_err(|e| e.context("pipeline-media exec-step")),
        Cmd::VcStandin(a) => pipeline_media::stages::vc_standin::run(a).map(|_| 0),
        Cmd::Elements { cmd } => cmd.run().map(|_| 0),
        Cmd::Bench {
            what: BenchCmd::Elements(a),
        } => pipeline_media::stages::elements_bench::run(a).map(|_| 0),
        Cmd::CheckCorpus(a) => pipeline_media::stages::check_corpus::run(a).map(|_| 0),
        Cmd::Kinds => {
            pipeline_core::exec::step::kinds_json(pipeline_media::stages::registry).map(|t| {
                println!("{t}");
                0
            })
        }
    };
    pipeline_core::exec::step::exit_with(result)
}
