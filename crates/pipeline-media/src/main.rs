//! `pipeline-media`: the media commands that subprocesses run many times
//! over, in a program that never links libtorch. The seedvc stage calls the
//! stand-in converter once per conversion (600 times in the demo); from the
//! full `pipeline` binary each call paid about 0.45 s to load libtorch it
//! never used. The seedvc command templates reach it as `{pipeline_media}`,
//! which falls back to `pipeline` itself when this program is not installed
//! beside it.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "pipeline-media", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Convert a voice as Seed-VC's CLI does (the demo's stand-in converter).
    VcStandin(pipeline::stages::vc_standin::VcStandinArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::VcStandin(a) => pipeline::stages::vc_standin::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
