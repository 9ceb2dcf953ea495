//! A full disk is reported as a full disk: the step fails with where and how
//! much, is recorded failed, and the next run succeeds once there is room.
//! Needs a small tmpfs, which only root can mount: skipped loudly elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn small_tmpfs(dir: &Path, size: &str) -> Option<Mount> {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Mount(dir.to_path_buf()))
}

fn pipeline(ws: &Path, args: &[&str]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .arg("-f")
        .arg(ws.join("pipeline.yaml"))
        .arg("-w")
        .arg(ws)
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn a_full_disk_fails_the_step_with_where_and_how_much_and_a_rerun_recovers() {
    let outer = tempfile::tempdir().unwrap();
    let Some(_mount) = small_tmpfs(outer.path(), "16m") else {
        eprintln!(
            "SKIPPED a_full_disk_fails_the_step...: cannot mount a 16 MB tmpfs here \
             (needs root and mount rights)"
        );
        return;
    };
    let ws = outer.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::write(
        ws.join("pipeline.yaml"),
        "stages:\n  fill:\n    cmd: head -c $(cat size) /dev/zero > big.bin\n    deps: [size]\n    outs: [big.bin]\n",
    )
    .unwrap();
    std::fs::write(ws.join("size"), "40000000\n").unwrap();
    let (code, out) = pipeline(&ws, &["run"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no space left on device at"), "{out}");
    assert!(out.contains("the step had written"), "{out}");
    assert!(!out.contains("database or disk is full"), "{out}");
    let (_, st) = pipeline(&ws, &["status", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&st[..st.rfind('}').unwrap() + 1]).unwrap();
    let last = &st["stages"][0]["last_step"];
    assert_eq!(last["status"], "failed", "{st}");
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains("no space left on device"),
        "{st}"
    );
    assert!(!ws.join("big.bin").exists(), "the partial output stays");
    // With room, the same workspace runs on.
    std::fs::write(ws.join("size"), "1000000\n").unwrap();
    let (code, out) = pipeline(&ws, &["run"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        std::fs::metadata(ws.join("big.bin")).unwrap().len(),
        1_000_000
    );
}
