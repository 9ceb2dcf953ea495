//! `pipeline lineage export`: OpenLineage run events validated against the
//! 2-0-2 schema and the facets' own schemas (offline), and PROV-JSON read
//! back by the Python `prov` package, both by `tests/oracles/
//! check_lineage_export.py` in the test-tools venv that `scripts/test.sh`
//! makes (`PIPELINE_TEST_PYTHON`). Without it, CI fails loudly and elsewhere
//! each test says loudly that it skipped.

mod common;
use common::Ws;

/// The OpenLineage 2-0-2 schemas, copied unchanged from the OpenLineage
/// project (Apache-2.0, LICENSE beside them).
const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oracles/openlineage");
const ORACLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/oracles/check_lineage_export.py"
);

const DAG: &str = "stages:
  make:
    cmd: echo made > a.txt
    outs: [a.txt]
  derive:
    cmd: tr a-z A-Z < a.txt > b.txt
    deps: [a.txt]
    outs: [b.txt]
  broken:
    cmd: cat a.txt > c.txt && exit 3
    deps: [a.txt]
    outs: [c.txt]
";

/// The test-tools Python, or `None` (having said so) where there is none.
fn tools_python() -> Option<String> {
    match std::env::var("PIPELINE_TEST_PYTHON") {
        Ok(p) if std::path::Path::new(&p).exists() => Some(p),
        _ if std::env::var_os("CI").is_some() => {
            panic!("PIPELINE_TEST_PYTHON is not set: scripts/test.sh makes the test-tools venv")
        }
        _ => {
            eprintln!("SKIPPED: no test-tools Python (PIPELINE_TEST_PYTHON); run scripts/test.sh");
            None
        }
    }
}

fn oracle(python: &str, args: &[&str]) -> serde_json::Value {
    let o = std::process::Command::new(python)
        .arg(ORACLE)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the oracle refused the export: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn ran_with_a_failure() -> Ws {
    let ws = Ws::new(DAG);
    let (code, _, err) = ws.run(&["run", "--keep-going"]);
    assert_eq!(code, 1, "{err}");
    ws
}

#[test]
fn openlineage_events_validate_and_name_each_version_by_its_blake3() {
    let Some(py) = tools_python() else {
        return;
    };
    let ws = ran_with_a_failure();
    let file = ws.path("events.ndjson");
    ws.ok(&[
        "lineage",
        "export",
        "--format",
        "openlineage",
        "-o",
        file.to_str().unwrap(),
    ]);
    let v = oracle(&py, &["openlineage", file.to_str().unwrap(), SPEC]);
    // The run and its three steps, each with a START and an end.
    assert_eq!(v["runs"], 4, "{v}");
    assert_eq!(v["types"]["START"], 4, "{v}");
    assert_eq!(v["types"]["COMPLETE"], 2, "{v}");
    assert_eq!(v["types"]["FAIL"], 2, "the step and its run: {v}");
    assert_eq!(v["parents"], 1, "every step's parent is the run: {v}");
    assert!(v["facets_checked"].as_u64().unwrap() >= 16, "{v}");
    let a = ws.path("a.txt").canonicalize().unwrap();
    let recorded = &v["versions"][a.to_str().unwrap()];
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(recorded, blake3::hash(&bytes).to_hex().as_str(), "{v}");
    // The same record exports the same events (run ids are derived, not drawn).
    let again = ws.ok(&["lineage", "export", "--format", "openlineage"]);
    assert_eq!(again, std::fs::read_to_string(&file).unwrap());
    let failed = again
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["eventType"] == "FAIL" && e["job"]["name"] == "broken")
        .unwrap();
    let message = failed["run"]["facets"]["errorMessage"]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("exit"), "{message}");
}

#[test]
fn prov_json_reads_back_with_each_output_derived_from_its_inputs() {
    let Some(py) = tools_python() else {
        return;
    };
    let ws = ran_with_a_failure();
    let file = ws.path("prov.json");
    ws.ok(&[
        "lineage",
        "export",
        "--format",
        "prov",
        "-o",
        file.to_str().unwrap(),
    ]);
    let v = oracle(&py, &["prov", file.to_str().unwrap()]);
    assert_eq!(v["counts"]["ProvActivity"], 3, "{v}");
    assert_eq!(v["counts"]["ProvEntity"], 2, "a.txt and b.txt: {v}");
    assert_eq!(v["counts"]["ProvGeneration"], 2, "{v}");
    assert_eq!(
        v["counts"]["ProvUsage"], 2,
        "derive and broken read a.txt: {v}"
    );
    assert_eq!(v["counts"]["ProvAssociation"], 3, "{v}");
    let labels = v["labels"].as_object().unwrap();
    let id_of = |path: &str| {
        labels
            .iter()
            .find(|(_, l)| l.as_str() == Some(path))
            .map(|(id, _)| id.clone())
            .unwrap()
    };
    let derived = v["derived"].as_array().unwrap();
    assert_eq!(derived.len(), 1, "{v}");
    assert_eq!(derived[0][0].as_str().unwrap(), id_of("b.txt"), "{v}");
    assert_eq!(derived[0][1].as_str().unwrap(), id_of("a.txt"), "{v}");
}

#[test]
fn lineage_without_an_artifact_says_what_to_name() {
    let ws = Ws::new(DAG);
    let (code, _, err) = ws.run(&["lineage"]);
    assert_ne!(code, 0);
    assert!(err.contains("name an artifact"), "{err}");
    assert!(err.contains("lineage export --format"), "{err}");
}
