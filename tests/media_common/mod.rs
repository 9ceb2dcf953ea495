//! Helpers shared by the media tests: the `ffmpeg` CLI as an oracle.
#![allow(dead_code)]

use std::process::Command;

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
