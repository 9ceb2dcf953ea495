//! A store on a network file system (told by statfs, injected here through
//! PIPELINE_FS_MAGIC) runs without WAL and with the engine's own lock file,
//! and says so once.

mod common;

use std::process::Stdio;

use common::{wait_for, Ws};

const NFS: &str = "0x6969";
const SLOW: &str = "stages:\n  slow:\n    cmd: sleep $(cat delay); echo done > out.txt\n    deps: [delay]\n    outs: [out.txt]\n";

#[test]
fn on_nfs_the_store_has_no_wal_and_a_run_holds_a_lock_file() {
    let ws = Ws::new(SLOW);
    // Made on a local disk first (WAL), then used from the network mount.
    ws.write("delay", "0\n");
    ws.ok(&["run"]);
    ws.write("delay", "1.5\n");
    let first = ws
        .cmd()
        .arg("run")
        .env("PIPELINE_FS_MAGIC", NFS)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&ws.path(".pipeline/steps/2/pid"), 20);
    let lock = ws.read(".pipeline/run.lock");
    assert!(
        lock.starts_with(&format!("{} {} ", pipeline::util::hostname(), first.id())),
        "{lock}"
    );
    assert!(
        !ws.path(".pipeline/state.db-wal").exists(),
        "a WAL file beside a store on NFS"
    );
    let second = ws
        .cmd()
        .arg("run")
        .env("PIPELINE_FS_MAGIC", NFS)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("locked by a running"), "{err}");
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("network file system (NFS)").count(), 1, "{err}");
    assert_eq!(ws.read("out.txt"), "done\n");
    assert!(
        !ws.path(".pipeline/run.lock").exists(),
        "the lock file stays"
    );
    // Said once per workspace; the same store found again.
    let o = ws
        .cmd()
        .arg("status")
        .env("PIPELINE_FS_MAGIC", NFS)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && !err.contains("network file system"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("up to date"));
}

#[test]
fn on_a_local_disk_the_store_runs_in_wal_mode() {
    let ws = Ws::new(SLOW);
    ws.write("delay", "1.5\n");
    let mut first = ws.cmd().arg("run").stderr(Stdio::null()).spawn().unwrap();
    wait_for(&ws.path(".pipeline/steps/1/pid"), 20);
    assert!(ws.path(".pipeline/state.db-wal").exists());
    assert!(!ws.path(".pipeline/run.lock").exists());
    assert!(first.wait().unwrap().success());
}
