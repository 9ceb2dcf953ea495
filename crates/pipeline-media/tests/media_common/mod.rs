//! Helpers shared by the media tests: the `ffmpeg` CLI as an oracle, and
//! the `pipeline` built beside this crate's program.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `pipeline` built beside this crate's program.
pub fn pipeline_exe() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_pipeline-media")).with_file_name("pipeline");
    assert!(
        exe.exists(),
        "{} is missing: `cargo build -p pipeline` (or `cargo test --workspace`) builds it",
        exe.display()
    );
    exe
}

/// True when the `ffmpeg` CLI is on PATH; says loudly that the test skipped
/// otherwise (`scripts/setup.sh` installs it).
pub fn require_ffmpeg() -> bool {
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "SKIPPED: the ffmpeg CLI (the test oracle) is not installed; run scripts/setup.sh"
        );
    }
    ok
}

/// Runs the CLI with `args` (overwriting outputs), panicking with its stderr on failure.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the CLI and returns what it wrote to stdout.
pub fn ffmpeg_stdout(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(args)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs one built-in stage kind directly (no engine, no store) with its step
/// and item folders `dirs`. Inputs and outputs are name -> path.
pub fn run_stage(
    kind: &str,
    workspace: &std::path::Path,
    params: &serde_json::Value,
    inputs: &[(&str, &std::path::Path)],
    outputs: &[(&str, &std::path::Path)],
    dirs: (&std::path::Path, &std::path::Path),
    threads: usize,
) -> anyhow::Result<()> {
    let map =
        |v: &[(&str, &std::path::Path)]| -> std::collections::BTreeMap<String, std::path::PathBuf> {
            v.iter()
                .map(|(k, p)| (k.to_string(), p.to_path_buf()))
                .collect()
        };
    let (inputs, outputs) = (map(inputs), map(outputs));
    let (step_dir, items_dir) = dirs;
    let ctx = pipeline_core::stages::StageContext {
        workspace,
        stage: kind,
        params,
        inputs: &inputs,
        input_hashes: &Default::default(),
        outputs: &outputs,
        step_dir,
        items_dir,
        shard: None,
        threads,
        provenance: &[],
    };
    pipeline_core::stages::lookup(pipeline_media::stages::registry(), kind)?.run(&ctx)
}
