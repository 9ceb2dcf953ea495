//! Workspaces whose paths hold URL syntax (`%41`, `?`, `#`), spaces and
//! non-ASCII: each opens its own store, by file name, and nothing is written
//! anywhere else.

mod common;

use std::path::Path;

const ONE: &str = "stages:\n  hello:\n    cmd: echo hello > out.txt\n    outs: [out.txt]\n";

fn pipeline(ws: &Path, args: &[&str]) -> (bool, String) {
    common::run_program(Path::new(env!("CARGO_BIN_EXE_pipeline")), ws, args)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn every_workspace_path_opens_its_own_store_by_file_name() {
    let parent = tempfile::tempdir().unwrap();
    // `aAb` first: a URL-decoding open of `a%41b` would find its store.
    let workspaces = [
        "aAb",
        "a%41b",
        "q?q=1",
        "h#frag",
        "sp ace",
        "ünï–cödé",
        "a%2Fb",
    ];
    for name in workspaces {
        let ws = parent.path().join(name);
        std::fs::create_dir(&ws).unwrap();
        std::fs::write(ws.join("pipeline.yaml"), ONE).unwrap();
        let (ok, out) = pipeline(&ws, &["run"]);
        assert!(ok, "{name}: {out}");
        assert!(
            out.contains("(step 1): never ran"),
            "{name}: a fresh store of its own: {out}"
        );
        assert_eq!(
            std::fs::read_to_string(ws.join("out.txt")).unwrap(),
            "hello\n"
        );
        assert!(
            ws.join(".pipeline/state.db").is_file(),
            "{name}: {:?}",
            names(&ws.join(".pipeline"))
        );
        let (ok, out) = pipeline(&ws, &["status"]);
        assert!(ok && out.contains("up to date"), "{name}: {out}");
    }
    let mut expected: Vec<String> = workspaces.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(
        names(parent.path()),
        expected,
        "nothing is written beside the workspaces"
    );
}
