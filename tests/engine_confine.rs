//! A link inside the workspace never lets a step delete or write outside it
//! unless `workspace.yaml` allows that location.

use std::os::unix::fs::symlink;

mod common;
use common::Ws;

const ONE: &str = "stages:\n  out:\n    cmd: mkdir -p ext/result && echo new > ext/result/made.txt\n    outs: [ext/result]\n";

#[test]
fn an_output_behind_a_link_out_of_the_workspace_is_refused_and_nothing_is_lost() {
    let ws = Ws::new(ONE);
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(outside.path().join("result")).unwrap();
    std::fs::write(outside.path().join("result/keep.txt"), "precious").unwrap();
    symlink(outside.path(), ws.path("ext")).unwrap();

    let (code, out, err) = ws.run(&["run"]);
    assert_ne!(code, 0, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains("ext/result")
            && text.contains("outside the workspace")
            && text.contains("is a link to"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(outside.path().join("result/keep.txt")).unwrap(),
        "precious",
        "a file outside the workspace was touched"
    );
    assert!(!outside.path().join("result/made.txt").exists());

    // Allowed explicitly (a scratch file system, on purpose): it runs, and
    // status says where outputs may go.
    let real = outside.path().canonicalize().unwrap();
    ws.write(
        "workspace.yaml",
        &format!("allow_outside: [{}]\n", real.display()),
    );
    ws.ok(&["run"]);
    assert_eq!(
        std::fs::read_to_string(outside.path().join("result/made.txt")).unwrap(),
        "new\n"
    );
    let status = ws.ok(&["status"]);
    assert!(status.contains(&real.display().to_string()), "{status}");
}
